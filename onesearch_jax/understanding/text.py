"""Tokens and n-grams of mixed Latin/CJK e-commerce text, shared by mining and keyword filtering.

Text is folded first (:func:`onesearch_jax.understanding.lexicon.fold`: NFKC, lower case). A
*word* is a run of letters/digits of an alphabetic script, with inner hyphens, dots, pluses and
slashes kept (``t-shirt``, ``1.5l``, ``3+``); a *CJK run* is a run of characters of scripts
written without spaces (Chinese has no word boundaries, so its n-grams are character n-grams).
Everything else (spaces, punctuation, brackets such as 【】) separates tokens.
"""

from __future__ import annotations

import functools

from onesearch_jax.understanding.lexicon import fold, is_word_char

_JOINERS = "-.+/'&"
_CJK_START = 0x2E80


def _is_cjk(ch: str) -> bool:
    return ch.isalnum() and ord(ch) >= _CJK_START


def spans(text: str) -> list[tuple[str, str, int, int]]:
    """``(kind, piece, start, end)`` of the folded text in order: kind ``"w"`` (word) or ``"c"`` (CJK run)."""
    out: list[tuple[str, str, int, int]] = []
    folded = fold(text)
    i, n = 0, len(folded)
    while i < n:
        ch = folded[i]
        j = i + 1
        if _is_cjk(ch):
            while j < n and _is_cjk(folded[j]):
                j += 1
            out.append(("c", folded[i:j], i, j))
        elif is_word_char(ch):
            while j < n and (
                is_word_char(folded[j]) or (folded[j] in _JOINERS and j + 1 < n and is_word_char(folded[j + 1]))
            ):
                j += 1
            if j < n and folded[j] == "+":
                j += 1  # "3+" keeps its plus
            out.append(("w", folded[i:j], i, j))
        i = j
    return out


def segments(text: str) -> list[tuple[str, str]]:
    """``(kind, piece)`` pieces of the folded text in order: ``("w", word)`` or ``("c", cjk_run)``.

    Example:
        >>> segments("Yoga Mat 6mm 瑜伽垫【加厚】")
        [('w', 'yoga'), ('w', 'mat'), ('w', '6mm'), ('c', '瑜伽垫'), ('c', '加厚')]
    """
    return [(kind, piece) for kind, piece, _, _ in spans(text)]


@functools.lru_cache(maxsize=65536)
def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for kind, piece in segments(text):
        if kind == "w":
            out.append(piece)
        else:
            out.extend(piece)
    return tuple(out)


def tokens(text: str) -> list[str]:
    """Word tokens and single CJK characters, in order: the units "already in the query" compares."""
    return list(_tokens(text))


def ngrams(text: str, *, max_words: int = 3, cjk_sizes: tuple[int, ...] = (2, 3, 4)) -> set[str]:
    """Distinct n-grams of a title: word n-grams (1..``max_words``) inside each run of words
    separated only by spaces, and character n-grams of the given sizes inside each CJK run (a
    run shorter than the smallest size is kept whole). N-grams never cross punctuation or a
    CJK/Latin boundary.

    Example:
        >>> sorted(ngrams("red yoga mat, 6mm", max_words=2))
        ['6mm', 'mat', 'red', 'red yoga', 'yoga', 'yoga mat']
    """
    if max_words < 1 or not cjk_sizes or min(cjk_sizes) < 1:
        raise ValueError(f"bad n-gram sizes: max_words={max_words}, cjk_sizes={cjk_sizes}")
    out: set[str] = set()
    run: list[str] = []

    def flush() -> None:
        for i in range(len(run)):
            for n in range(1, min(max_words, len(run) - i) + 1):
                out.add(" ".join(run[i : i + n]))
        run.clear()

    folded = fold(text)
    last_end = 0
    for kind, piece, start, end in spans(text):
        if kind == "c" or folded[last_end:start].strip():
            flush()
        if kind == "c":
            if len(piece) < min(cjk_sizes):
                out.add(piece)
            for n in cjk_sizes:
                out.update(piece[i : i + n] for i in range(len(piece) - n + 1))
        else:
            run.append(piece)
        last_end = end
    flush()
    return out


def adds_nothing(candidate: str, query: str) -> bool:
    """True when every token of ``candidate`` already occurs in ``query`` (OneSearch-V2's keywords
    must name what the query implies, "not words already in the query")."""
    have = set(_tokens(query))
    return all(t in have for t in _tokens(candidate))


@functools.lru_cache(maxsize=65536)
def _bigrams(text: str) -> frozenset[str]:
    return frozenset(piece[i : i + 2] for kind, piece in segments(text) if kind == "c" for i in range(len(piece) - 1))


def redundant(a: str, b: str) -> bool:
    """True when one of two keywords says no more than the other: the tokens of one contain the
    other's ("jacket" and "down jacket"), or their CJK runs share a character bigram (overlapping
    fragments of one phrase, "瑜伽垫" and "伽垫加厚")."""
    ta, tb = set(_tokens(a)), set(_tokens(b))
    if ta <= tb or tb <= ta:
        return True
    return bool(_bigrams(a) & _bigrams(b))
