"""`OneSearchVocabulary`: a SentencePiece model over record text plus one token per SID code.

The model is trained on the records' text (English and Chinese) by :func:`train_vocabulary`; the
SID tokens of a :class:`~onesearch_jax.sid.codebook.SidCodebook` and the prompt markers are
SentencePiece ``user_defined_symbols``, so each stays one piece wherever it appears, with ids in
insertion order (DESIGN.md, "Known pitfalls"). That gives a fixed id layout:

=====================  ===========================================================================
ids                    pieces
=====================  ===========================================================================
0, 1, 2                ``<pad>``, ``</s>``, ``<unk>``: PAD 0, EOS 1, UNK 2 as seqio assumes; no BOS
                       (id -1), as T5 has none
``[3, 3 + S)``         the S SID tokens in :meth:`SidCodebook.vocabulary` order (``sid_first_id``
                       is 3): ``<a_0>..``, ``<b_0>..``, ``<c_0>..``, then the OPQ tokens ``<d_0>..``
next E                 the ``extra_symbols`` (prompt markers such as ``[query]``), in config order
next 256               byte pieces ``<0x00>..<0xFF>`` when ``byte_fallback`` (unseen characters
                       become their UTF-8 bytes, never ``<unk>``)
the rest               pieces learned from the text
=====================  ===========================================================================

SID position t owns the contiguous ids ``[position_first_ids[t], position_first_ids[t] +
code_sizes[t])`` and code c is id ``position_first_ids[t] + c``; OPQ sub-code m starts ``m * 2^bits``
after the first OPQ id, as its tokens ``<d_{c + m * 2^bits}>`` do. Mapping between SIDs and ids is
arithmetic (:meth:`OneSearchVocabulary.sid_token_ids`, :meth:`~OneSearchVocabulary.sid_from_token_ids`,
:meth:`~OneSearchVocabulary.position_id_ranges` for decoding masks).

Tokenisation rules worth knowing:

* No dummy prefix: text is not given a leading ``▁``. A target written as SID tokens
  (``SidCodebook.tokens(sid)``) therefore encodes to exactly ``sid_token_ids(sid)``, L ids with no
  whitespace piece in front, and Chinese text (no spaces) does not start with a lone ``▁``. A word
  after a space still gets its ``▁`` ("[query] red dress" -> ``[query]``, ``▁red``, ``▁dress``);
  a word at the start of a string, or right after a marker with no space, is segmented without it.
* Whitespace is a piece of its own before a symbol: "red dress <a_3>" ends ``▁dress``, ``▁``,
  ``<a_3>``. Write the tokens of one SID without spaces between them, as ``SidCodebook.tokens`` does.
* ``nmt_nfkc`` normalisation by default: full-width letters, digits and punctuation become
  half-width and runs of whitespace one space, so ``decode(encode(s))`` is ``s`` normalised.

On-disk format, version 1 (a directory, no pickle):

* ``spm.model``: the serialised SentencePiece ``ModelProto``;
* ``vocab.json``: ``format`` ("onesearch-vocabulary"), ``version``, ``vocab_size``, the special
  ids, ``code_sizes``, ``num_levels``, ``opq_bits``, ``letters``, ``token_offsets``,
  ``sid_first_id``, ``sid_num_ids``, ``extra_symbols``, ``extra_symbol_ids``,
  ``num_training_texts`` and the :class:`VocabConfig` used. :meth:`OneSearchVocabulary.load` checks
  it against ``spm.model``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import seqio
from sentencepiece import sentencepiece_model_pb2

from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.vocab_config import (  # noqa: F401 (re-exported)
    BOS_ID,
    EOS_ID,
    META_FILE,
    MODEL_TYPES,
    NORMALIZATION_RULES,
    NUM_BYTE_PIECES,
    NUM_SPECIAL_IDS,
    PAD_ID,
    SPM_FILE,
    UNK_ID,
    VOCAB_FORMAT,
    VOCAB_VERSION,
    VocabConfig,
)


def sid_token_table(
    code_sizes: Sequence[int], letters: Sequence[str], token_offsets: Sequence[int]
) -> tuple[list[str], tuple[int, ...]]:
    """Every SID token in vocabulary order, and the index of each position's code 0 in that list.

    The order is :meth:`SidCodebook.vocabulary`'s: positions in turn, codes ascending; OPQ
    positions share a letter and follow one another (``<d_0>..<d_255>``, ``<d_256>..``).

    Raises:
        ValueError: two positions would share a token (their ranges overlap), or mismatched lengths.
    """
    if not len(code_sizes) == len(letters) == len(token_offsets):
        raise ValueError(f"code_sizes {code_sizes}, letters {letters}, token_offsets {token_offsets}: lengths differ")
    tokens: list[str] = []
    firsts = []
    for t, (size, letter, offset) in enumerate(zip(code_sizes, letters, token_offsets, strict=True)):
        firsts.append(len(tokens))
        tokens.extend(f"<{letter}_{int(code) + int(offset)}>" for code in range(int(size)))
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"SID position {t + 1} reuses tokens of an earlier position (sizes {code_sizes})")
    return tokens, tuple(firsts)


class OneSearchVocabulary(seqio.SentencePieceVocabulary):
    """A seqio SentencePiece vocabulary whose SID tokens occupy one contiguous id range.

    Build it with :meth:`load` (or :func:`train_vocabulary`); the constructor trusts its
    arguments. It is a plain ``seqio.SentencePieceVocabulary`` with ``extra_ids=0`` (PAD 0, EOS 1,
    UNK 2, no BOS), so ``encode``/``decode``/``encode_tf``/``decode_tf`` behave as seqio's, plus the
    SID arithmetic described in the module docstring.
    """

    def __init__(
        self,
        sentencepiece_model_file: str,
        *,
        code_sizes: Sequence[int],
        letters: Sequence[str],
        token_offsets: Sequence[int],
        sid_first_id: int,
        extra_symbols: Sequence[str] = (),
        extra_symbol_ids: Sequence[int] = (),
    ) -> None:
        """Wraps ``sentencepiece_model_file`` with the SID layout of ``vocab.json`` (see :meth:`load`)."""
        super().__init__(sentencepiece_model_file, extra_ids=0)
        self._code_sizes = tuple(int(k) for k in code_sizes)
        self._letters = tuple(letters)
        self._token_offsets = tuple(int(o) for o in token_offsets)
        tokens, firsts = sid_token_table(self._code_sizes, self._letters, self._token_offsets)
        self._sid_first_id = int(sid_first_id)
        self._sid_num_ids = len(tokens)
        self._position_first_ids = tuple(self._sid_first_id + f for f in firsts)
        self._extra_symbols = tuple(extra_symbols)
        self._extra_symbol_ids = tuple(int(i) for i in extra_symbol_ids)

    # ------------------------------------------------------------------ layout
    @property
    def sid_first_id(self) -> int:
        """Id of the first SID token (``<a_0>``)."""
        return self._sid_first_id

    @property
    def sid_num_ids(self) -> int:
        """Number of SID token ids; they are ``[sid_first_id, sid_first_id + sid_num_ids)``."""
        return self._sid_num_ids

    @property
    def code_sizes(self) -> tuple[int, ...]:
        """Codes available at each SID position."""
        return self._code_sizes

    @property
    def sid_length(self) -> int:
        """Tokens per SID."""
        return len(self._code_sizes)

    @property
    def letters(self) -> tuple[str, ...]:
        """Token letter of each SID position (as ``SidCodebook.letters``)."""
        return self._letters

    @property
    def token_offsets(self) -> tuple[int, ...]:
        """Number added to each position's code in its token string (as ``SidCodebook.token_offsets``)."""
        return self._token_offsets

    @property
    def position_first_ids(self) -> tuple[int, ...]:
        """Id of code 0 at each SID position."""
        return self._position_first_ids

    @property
    def extra_symbols(self) -> tuple[str, ...]:
        """The prompt markers kept as single pieces."""
        return self._extra_symbols

    @property
    def extra_symbol_ids(self) -> dict[str, int]:
        """Marker -> its id."""
        return dict(zip(self._extra_symbols, self._extra_symbol_ids, strict=True))

    def sid_tokens(self) -> list[str]:
        """Every SID token string, in id order (id ``sid_first_id + i`` is entry i)."""
        return sid_token_table(self._code_sizes, self._letters, self._token_offsets)[0]

    def position_id_ranges(self) -> list[tuple[int, int]]:
        """Per SID position, ``(first_id, end_id)``: the half-open range of ids allowed there.

        OPQ sub-code m's range starts ``m * 2^bits`` after the first OPQ id. Build decoding
        masks from these (e.g. ``first <= id < end`` at step t).
        """
        return [(first, first + size) for first, size in zip(self._position_first_ids, self._code_sizes, strict=True)]

    def sid_token_ids(self, sid: Sequence[int]) -> list[int]:
        """Token ids of a SID: ``position_first_ids[t] + sid[t]``.

        Raises:
            ValueError: wrong length, or a code outside ``0..code_sizes[t]-1`` (names the position).
        """
        if len(sid) != self.sid_length:
            raise ValueError(f"SID {tuple(sid)} has {len(sid)} codes, expected {self.sid_length}")
        ids = []
        for t, (code, first, size) in enumerate(zip(sid, self._position_first_ids, self._code_sizes, strict=True)):
            code = int(code)
            if not 0 <= code < size:
                raise ValueError(f"SID {tuple(sid)}: code {code} at position {t + 1} is outside 0..{size - 1}")
            ids.append(first + code)
        return ids

    def sid_from_token_ids(self, ids: Sequence[int]) -> tuple[int, ...]:
        """The SID whose token ids are ``ids`` (the inverse of :meth:`sid_token_ids`).

        Raises:
            ValueError: wrong length, or an id that is not a token of its SID position (names the
                position, the id and the allowed range).
        """
        if len(ids) != self.sid_length:
            raise ValueError(f"token ids {list(ids)} are {len(ids)} ids, a SID is {self.sid_length}")
        sid = []
        for t, (token_id, first, size) in enumerate(zip(ids, self._position_first_ids, self._code_sizes, strict=True)):
            code = int(token_id) - first
            if not 0 <= code < size:
                raise ValueError(
                    f"token id {int(token_id)} at SID position {t + 1} is not a position-{t + 1} SID token "
                    f"(allowed ids {first}..{first + size - 1})"
                )
            sid.append(code)
        return tuple(sid)

    def check_codebook(self, codebook: SidCodebook) -> None:
        """Raises ValueError unless ``codebook`` writes exactly this vocabulary's SID tokens."""
        if codebook.vocabulary() != self.sid_tokens():
            raise ValueError(
                f"codebook (code sizes {codebook.code_sizes}, letters {codebook.letters()}) does not match the "
                f"vocabulary's SID tokens (code sizes {self._code_sizes}, letters {self._letters})"
            )

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, directory: str | os.PathLike) -> OneSearchVocabulary:
        """Reads ``spm.model`` and ``vocab.json`` from ``directory`` and checks they agree.

        Raises:
            ValueError: another format or version, special ids other than PAD 0 / EOS 1 / UNK 2 /
                no BOS, a size other than recorded, or a SID token or marker that is not one piece
                with the recorded id (the error names it).
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != VOCAB_FORMAT or meta.get("version") != VOCAB_VERSION:
            raise ValueError(
                f"{meta_path}: expected format {VOCAB_FORMAT} version {VOCAB_VERSION}, "
                f"found {meta.get('format')} version {meta.get('version')}"
            )
        try:
            vocab = cls(
                str(directory / SPM_FILE), code_sizes=meta["code_sizes"], letters=meta["letters"],
                token_offsets=meta["token_offsets"], sid_first_id=meta["sid_first_id"],
                extra_symbols=meta["extra_symbols"], extra_symbol_ids=meta["extra_symbol_ids"],
            )  # fmt: skip
        except KeyError as e:
            raise ValueError(f"{meta_path} lacks the field {e}") from None
        vocab._refresh_if_stale()
        vocab._validate(meta, meta_path)
        return vocab

    def _refresh_if_stale(self) -> None:
        """Reloads when seqio's per-path model cache holds an older ``spm.model`` of this path.

        seqio caches loaded models by file name for the whole process, so a model retrained into
        the same directory would otherwise keep answering with the old pieces.
        """
        with open(self.sentencepiece_model_file, "rb") as f:
            on_disk = sentencepiece_model_pb2.ModelProto.FromString(f.read())
        if sentencepiece_model_pb2.ModelProto.FromString(self.sp_model) != on_disk:
            seqio.vocabularies._load_model_internal.cache_clear()
            self._model = None

    def _validate(self, meta: Mapping[str, Any], meta_path: Path) -> None:
        sp = self.tokenizer
        where = f"{meta_path} does not match {self.sentencepiece_model_file}"
        specials = (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id())
        if specials != (PAD_ID, EOS_ID, UNK_ID, BOS_ID):
            raise ValueError(f"{self.sentencepiece_model_file}: pad/eos/unk/bos ids {specials}, seqio needs 0/1/2/-1")
        if sp.GetPieceSize() != meta.get("vocab_size"):
            raise ValueError(f"{where}: {sp.GetPieceSize()} pieces, vocab.json says {meta.get('vocab_size')}")
        if self._sid_first_id + self._sid_num_ids > sp.GetPieceSize() or self._sid_first_id < NUM_SPECIAL_IDS:
            raise ValueError(f"{where}: SID ids [{self._sid_first_id}, +{self._sid_num_ids}) fall outside the model")
        tokens = self.sid_tokens()
        for i, token in enumerate(tokens):
            got = sp.PieceToId(token)
            if got != self._sid_first_id + i or sp.IdToPiece(got) != token:
                found = "has no such piece" if sp.IdToPiece(got) != token else f"has it at id {got}"
                raise ValueError(f"{where}: SID token {token} should be id {self._sid_first_id + i}, the model {found}")
        if list(sp.EncodeAsIds("".join(tokens))) != list(range(self._sid_first_id, self._sid_first_id + len(tokens))):
            raise ValueError(f"{where}: SID tokens are not kept as single pieces (not user-defined symbols)")
        if len(self._extra_symbols) != len(self._extra_symbol_ids):
            raise ValueError(f"{where}: {len(self._extra_symbols)} extra symbols but {len(self._extra_symbol_ids)} ids")
        for symbol, want in zip(self._extra_symbols, self._extra_symbol_ids, strict=True):
            if list(sp.EncodeAsIds(symbol)) != [want] or sp.IdToPiece(want) != symbol:
                raise ValueError(f"{where}: extra symbol {symbol!r} is not the single piece id {want}")


def _training_texts(texts: Iterable[str], config: VocabConfig) -> list[str]:
    """The texts SentencePiece sees: all (or a seeded sample of ``max_sentences``), in input order."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"training text {i} is {type(text).__name__}, not str")
        size = len(text.encode("utf-8"))
        if size > config.max_text_bytes:
            raise ValueError(
                f"training text {i} is {size} UTF-8 bytes, over VocabConfig.max_text_bytes={config.max_text_bytes} "
                "(SentencePiece would skip it silently); raise the limit or split the text"
            )
        out.append(text)
    if config.max_sentences and len(out) > config.max_sentences:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(out), config.max_sentences, replace=False))
        out = [out[i] for i in keep.tolist()]
    if not any(t.strip() for t in out):
        raise ValueError("no training text: the vocabulary needs some record text")
    return out


def train_vocabulary(
    texts: Iterable[str], codebook: SidCodebook, out_dir: str | os.PathLike, config: VocabConfig
) -> OneSearchVocabulary:
    """Trains the SentencePiece model on ``texts`` with ``codebook``'s SID tokens; writes and loads it.

    Writes ``out_dir/spm.model`` and ``out_dir/vocab.json`` (format in the module docstring) and
    returns :meth:`OneSearchVocabulary.load` of them. Texts may contain SID tokens and markers;
    those are kept whole and not learned from. Deterministic: the same texts and config give a
    byte-identical ``spm.model``.

    Raises:
        ValueError: ``vocab_size`` too small for the fixed pieces or the text's characters (or too
            large for the text, with ``hard_vocab_limit``), an extra symbol equal to a SID token,
            a text over ``max_text_bytes``, or no text at all.
    """
    sid_tokens, _ = sid_token_table(codebook.code_sizes, codebook.letters(), codebook.token_offsets())
    if sid_tokens != codebook.vocabulary():
        raise ValueError("the codebook's SID tokens are not laid out position by position (see sid_token_table)")
    clash = set(config.extra_symbols) & set(sid_tokens)
    if clash:
        raise ValueError(f"VocabConfig.extra_symbols {sorted(clash)} are SID tokens")
    fixed = NUM_SPECIAL_IDS + len(sid_tokens) + len(config.extra_symbols) + NUM_BYTE_PIECES * config.byte_fallback
    if config.vocab_size <= fixed:
        raise ValueError(
            f"VocabConfig.vocab_size {config.vocab_size} is too small: {fixed} ids are fixed (3 special, "
            f"{len(sid_tokens)} SID tokens, {len(config.extra_symbols)} extra symbols"
            f"{', 256 bytes' if config.byte_fallback else ''}) before any piece learned from text"
        )
    sentences = _training_texts(texts, config)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, vocab_size=config.vocab_size,
            model_type=config.model_type, character_coverage=config.character_coverage,
            byte_fallback=config.byte_fallback, normalization_rule_name=config.normalization_rule_name,
            user_defined_symbols=[*sid_tokens, *config.extra_symbols], hard_vocab_limit=config.hard_vocab_limit,
            pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=BOS_ID,
            add_dummy_prefix=False, shuffle_input_sentence=False, input_sentence_size=0,
            max_sentence_length=config.max_text_bytes, num_threads=config.num_threads, minloglevel=1,
        )  # fmt: skip
    except RuntimeError as e:
        raise ValueError(
            f"SentencePiece training failed for VocabConfig.vocab_size={config.vocab_size} on {len(sentences)} "
            f"texts ({fixed} ids fixed before text pieces): {e}"
        ) from e
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPM_FILE).write_bytes(model.getvalue())
    first_extra = NUM_SPECIAL_IDS + len(sid_tokens)
    meta = {
        "format": VOCAB_FORMAT, "version": VOCAB_VERSION, "vocab_size": config.vocab_size,
        "pad_id": PAD_ID, "eos_id": EOS_ID, "unk_id": UNK_ID, "bos_id": BOS_ID,
        "code_sizes": list(codebook.code_sizes), "num_levels": codebook.num_levels, "opq_bits": codebook.opq_bits,
        "letters": list(codebook.letters()), "token_offsets": list(codebook.token_offsets()),
        "sid_first_id": NUM_SPECIAL_IDS, "sid_num_ids": len(sid_tokens),
        "extra_symbols": list(config.extra_symbols),
        "extra_symbol_ids": list(range(first_extra, first_extra + len(config.extra_symbols))),
        "num_training_texts": len(sentences), "config": dataclasses.asdict(config),
    }  # fmt: skip
    if not config.hard_vocab_limit:
        meta["vocab_size"] = len(sentencepiece_model_pb2.ModelProto.FromString(model.getvalue()).pieces)
    with open(out / META_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return OneSearchVocabulary.load(out)
