"""`VocabConfig` and the vocabulary's fixed ids, apart from `vocab.py` so gin can register the
config without importing seqio and TensorFlow (every `onesearch` command parses gin first).
"""

from __future__ import annotations

import dataclasses
import re

VOCAB_FORMAT = "onesearch-vocabulary"
VOCAB_VERSION = 1
SPM_FILE = "spm.model"
META_FILE = "vocab.json"
PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, -1
NUM_SPECIAL_IDS = 3  # pad, eos, unk
NUM_BYTE_PIECES = 256
MODEL_TYPES = ("unigram", "bpe")
NORMALIZATION_RULES = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
_SPECIAL_PIECES = ("<pad>", "</s>", "<unk>", "<s>")
_SID_LIKE = re.compile(r"<[a-z]_\d+>")
_BYTE_LIKE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VocabConfig:
    """How :func:`train_vocabulary` trains the SentencePiece model.

    Training is deterministic: every text is used in the order given (no shuffling, no sampling
    unless ``max_sentences`` asks for it, and then with ``seed``), so the same texts and config
    give a byte-identical ``spm.model``.

    Attributes:
        vocab_size: total number of pieces, i.e. the seqio ``vocab_size`` and the model's
            embedding rows: 3 special ids + SID tokens + ``extra_symbols`` + 256 byte pieces (when
            ``byte_fallback``) + pieces learned from text. It must exceed the fixed part, and the
            learned part must hold the characters that ``character_coverage`` keeps (SentencePiece
            reports how many when it does not).
        model_type: ``unigram`` (as T5) or ``bpe``.
        character_coverage: share of the text's characters that become pieces of their own;
            rarer ones are spelt as bytes (or ``<unk>`` without ``byte_fallback``). 0.9995 is
            SentencePiece's advice for Chinese.
        byte_fallback: spell characters outside the vocabulary as their UTF-8 byte pieces, so
            unseen Chinese characters never become ``<unk>`` and decode back exactly.
        normalization_rule_name: SentencePiece normaliser (``nmt_nfkc`` folds full-width forms).
        extra_symbols: prompt markers (e.g. ``"[query]"``) kept as single pieces, ids right after
            the SID range. No whitespace, no duplicates, nothing shaped like a SID, byte or
            special piece.
        hard_vocab_limit: the model has exactly ``vocab_size`` pieces (SentencePiece fails when
            the text cannot yield that many); False makes ``vocab_size`` an upper bound.
        max_sentences: train on at most this many texts, a uniform sample drawn with ``seed``
            and kept in input order; 0 uses every text.
        seed: seeds the ``max_sentences`` sample (the only randomness in training).
        max_text_bytes: longest text accepted, in UTF-8 bytes. SentencePiece silently skips
            longer lines, so a longer text is an error here rather than silently dropped.
        num_threads: SentencePiece training threads. The trained model depends on it (partial
            sums are combined per thread), so it is part of the config that fixes the bytes.
    """

    vocab_size: int = 8000
    model_type: str = "unigram"
    character_coverage: float = 0.9995
    byte_fallback: bool = True
    normalization_rule_name: str = "nmt_nfkc"
    extra_symbols: tuple[str, ...] = ()
    hard_vocab_limit: bool = True
    max_sentences: int = 0
    seed: int = 0
    max_text_bytes: int = 1 << 16
    num_threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_symbols", tuple(self.extra_symbols))
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"VocabConfig.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.normalization_rule_name not in NORMALIZATION_RULES:
            raise ValueError(
                f"VocabConfig.normalization_rule_name must be one of {NORMALIZATION_RULES}, "
                f"got {self.normalization_rule_name!r}"
            )
        if not 0.0 < self.character_coverage <= 1.0:
            raise ValueError(f"VocabConfig.character_coverage must be in (0, 1], got {self.character_coverage}")
        for name in ("max_sentences", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"VocabConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_text_bytes < 1 or self.num_threads < 1:
            raise ValueError("VocabConfig.max_text_bytes and num_threads must be >= 1")
        for symbol in self.extra_symbols:
            if not isinstance(symbol, str) or not symbol or any(ch.isspace() for ch in symbol):
                raise ValueError(f"VocabConfig.extra_symbols: {symbol!r} must be a non-empty string without spaces")
            if symbol in _SPECIAL_PIECES or _SID_LIKE.fullmatch(symbol) or _BYTE_LIKE.fullmatch(symbol):
                raise ValueError(f"VocabConfig.extra_symbols: {symbol!r} is reserved (special, SID or byte piece)")
        if len(set(self.extra_symbols)) != len(self.extra_symbols):
            raise ValueError(f"VocabConfig.extra_symbols has duplicates: {self.extra_symbols}")
        fixed = NUM_SPECIAL_IDS + len(self.extra_symbols) + NUM_BYTE_PIECES * self.byte_fallback
        if self.vocab_size <= fixed:
            raise ValueError(
                f"VocabConfig.vocab_size {self.vocab_size} leaves no room for text pieces: {fixed} ids are taken "
                f"before any SID token (3 special, {len(self.extra_symbols)} extra symbols"
                f"{', 256 bytes' if self.byte_fallback else ''})"
            )
