"""Text for language models: reading, tokenising, vocabularies and contiguous TBPTT batching.

Input: one UTF-8 text file, a folder of text files (read in sorted order and joined), or a Penn Treebank
layout (separate train / valid / test files, one sentence per line). Tokenisations:

``char``
    one token per Unicode character; the vocabulary is every character of the training text (``<unk>`` for
    characters first seen later).
``word``
    whitespace-separated words, an end-of-sentence token ``<eos>`` after every line (PTB convention). The
    vocabulary comes from the training text, keeping words seen ``min_freq`` times or more and at most
    ``max_size`` entries (specials included, 0 = no limit); every other word, and a literal ``<unk>`` in the
    text, is ``<unk>``. Ids are in frequency order after the specials (``<unk>`` = 0, ``<eos>`` = 1).
``byte``
    the raw bytes of the file: 256 symbols, never an unknown, no decoding at all.

Batching follows Zaremba et al. (2014): the token stream is cut into B contiguous parallel streams, shape
(B, N // B), read in windows of T tokens; the model carries its hidden state from one window to the next (see
``SequenceTask.carry_state``). Letters: B streams (batch), T window length (bptt), N tokens.
"""
from __future__ import annotations

import codecs
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import DataError

__all__ = ["Vocab", "TOKENIZATIONS", "read_text", "find_splits", "tokenize", "StreamBatches", "streams",
           "split_ids", "UNK", "EOS", "BLANK"]

TOKENIZATIONS = ("char", "word", "byte")
UNK, EOS, BLANK = "<unk>", "<eos>", "<blank>"
_SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


# ====================================================================== reading
def _files(path: Path) -> list[Path]:
    """The text files of ``path``: itself, or every non-hidden file below a folder in sorted order."""
    if not path.exists():
        raise DataError("file or folder not found", path=path)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in
                                                                           p.relative_to(path).parts))
    if not files:
        raise DataError("the folder holds no files; expected text files", path=path)
    return files


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file or of every file of a folder (joined, a newline between files without one)."""
    parts = []
    for f in _files(Path(path)):
        b = f.read_bytes()
        if parts and not parts[-1].endswith(b"\n"):
            parts.append(b"\n")
        parts.append(b)
    data = b"".join(parts)
    if not data:
        raise DataError("empty: no text to learn from", path=path)
    return data


def decode(data: bytes, path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """``data`` as text; invalid input names the file, line and byte offset of the first bad byte."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}; expected a Python codec name such as utf-8 or "
                        "latin-1", path=path) from None
    try:
        return data.decode(encoding, errors)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"invalid {encoding} at byte offset {e.start} (byte {data[e.start:e.start + 1]!r}: "
                        f"{e.reason}); pass --encoding (e.g. latin-1) or --errors replace, or use "
                        "--tokenize byte", path=path, line=line) from None
    except LookupError:
        raise DataError(f"unknown errors handler {errors!r}; expected strict, replace or ignore",
                        path=path) from None


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The text of a file or folder (see :func:`read_bytes` and :func:`decode`)."""
    parts = []
    for f in _files(Path(path)):
        text = decode(f.read_bytes(), f, encoding, errors)             # errors name the file they are in
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(text)
    if not any(parts):
        raise DataError("empty: no text to learn from", path=path)
    return "".join(parts)


def find_splits(path: str | Path) -> dict[str, Path] | None:
    """A PTB-style folder: one file each whose name holds train, valid (val/dev) and optionally test."""
    p = Path(path)
    if not p.is_dir():
        return None
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and "license" not in
             f.name.lower() and "readme" not in f.name.lower()]
    found: dict[str, Path] = {}
    for split, keys in _SPLIT_NAMES.items():
        hits = [f for f in files if any(k in f.name.lower().replace("-", ".").replace("_", ".").split(".")
                                        for k in keys)]
        if len(hits) == 1:
            found[split] = hits[0]
    return found if "train" in found and "valid" in found else None


# ====================================================================== tokens and vocabulary
def tokenize(text: str | bytes, kind: str) -> list:
    """Tokens of ``text``: characters, words with ``<eos>`` per line, or byte values (``text`` as bytes)."""
    if kind == "char":
        return list(text)
    if kind == "word":
        out: list[str] = []
        for line in text.splitlines():
            out += line.split()
            out.append(EOS)
        return out
    if kind == "byte":
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))
    raise DataError(f"unknown tokenisation {kind!r}; expected one of {', '.join(TOKENIZATIONS)}")


@dataclass
class Vocab:
    """THE vocabulary of grukit: token <-> id. ``kind`` char/word keep ``itos``; byte has 256 fixed ids.

    Id 0 is reserved: ``<unk>`` for a language model (:meth:`build`), the CTC blank ``<blank>`` for the
    output symbols of a speech model (:meth:`of_labels`, :meth:`labels`, :meth:`text_of`).
    """

    kind: str
    itos: list[str]

    def __post_init__(self):
        self.stoi = {s: i for i, s in enumerate(self.itos)} if self.kind != "byte" else {}

    @classmethod
    def build(cls, tokens: Iterable, kind: str, min_freq: int = 1, max_size: int = 0) -> "Vocab":
        if kind == "byte":
            return cls("byte", [])
        counts = Counter(tokens)
        counts.pop(UNK, None)
        keep = [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
        specials = [UNK] + ([EOS] if kind == "word" else [])            # <eos> is structure, always kept
        rest = [t for t in keep if t not in specials]                   # most frequent first
        if max_size > 0:
            rest = rest[: max(0, max_size - len(specials))]
        return cls(kind, specials + rest)

    def __len__(self) -> int:
        return 256 if self.kind == "byte" else len(self.itos)

    @property
    def unk(self) -> int | None:
        return None if self.kind == "byte" else 0

    def encode(self, tokens: Iterable) -> np.ndarray:
        """(N,) int64 ids; unknown tokens become ``<unk>`` (byte tokens are their own ids)."""
        if self.kind == "byte":
            return np.fromiter(tokens, dtype=np.int64)
        get = self.stoi.get
        return np.fromiter((get(t, 0) for t in tokens), dtype=np.int64)

    def token(self, i: int):
        """The token of id ``i`` (an int for bytes)."""
        return int(i) if self.kind == "byte" else self.itos[int(i)]

    def piece(self, i: int) -> str:
        """Text to print for token ``i`` (char/word; bytes need :meth:`decoder`)."""
        t = self.itos[int(i)]
        if self.kind == "char":
            return "\ufffd" if i == 0 else t
        return "\n" if t == EOS else t + " "

    def decoder(self):
        """A function ids -> text that can be fed token by token (UTF-8 bytes joined incrementally)."""
        if self.kind == "byte":
            dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
            return lambda ids, final=False: dec.decode(bytes(int(i) for i in ids), final)
        return lambda ids, final=False: "".join(self.piece(i) for i in ids)

    def decode(self, ids) -> str:
        return self.decoder()(list(ids), True)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "itos": self.itos}

    # ---- CTC output symbols (speech): id 0 is the blank, texts are cleaned (lower case, single spaces)
    @staticmethod
    def clean(text: str) -> str:
        """Lower case, runs of whitespace as one space, no leading/trailing space."""
        return " ".join(text.lower().split())

    @classmethod
    def of_labels(cls, texts: Iterable[str], kind: str) -> "Vocab":
        """The blank, then every character (``kind="char"``) or word of the cleaned ``texts``, sorted."""
        items: set[str] = set()
        for t in texts:
            items.update(cls.clean(t).split() if kind == "word" else cls.clean(t))
        return cls(kind, [BLANK] + sorted(items))

    @classmethod
    def from_symbols(cls, symbols: Iterable[str], kind: str) -> "Vocab":
        """A CTC vocabulary from its symbols 1..S (as a run's meta stores them)."""
        return cls(kind, [BLANK] + list(symbols))

    @property
    def symbols(self) -> list[str]:
        """The CTC output symbols 1..S (everything after the reserved id 0)."""
        return self.itos[1:]

    def labels(self, text: str) -> list[int]:
        """CTC target ids of the cleaned ``text``; symbols outside the vocabulary are dropped."""
        items = self.clean(text).split() if self.kind == "word" else self.clean(text)
        return [i for i in (self.stoi.get(s, 0) for s in items) if i > 0]

    def text_of(self, ids) -> str:
        """Text of CTC label ids: blanks and unknown ids dropped, words joined by spaces."""
        sym = [self.itos[i] for i in (int(i) for i in ids) if 0 < i < len(self.itos)]
        return " ".join(sym) if self.kind == "word" else "".join(sym).strip()

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(d["kind"], list(d["itos"]))


def encode_file(path: str | Path, vocab: Vocab, encoding: str = "utf-8", errors: str = "strict") -> np.ndarray:
    """The ids of a whole file or folder under ``vocab``."""
    if vocab.kind == "byte":
        return vocab.encode(read_bytes(path))
    return vocab.encode(tokenize(read_text(path, encoding, errors), vocab.kind))


# ====================================================================== a language model's splits
def _tokens_of(path: str, cfg) -> list:
    if cfg.tokenize == "byte":
        return list(read_bytes(path))
    return tokenize(read_text(path, cfg.encoding, cfg.errors), cfg.tokenize)


def _split_tokens(cfg) -> tuple[dict[str, list], dict[str, str]]:
    """Tokens of train / valid / test and where each came from (file path or 'tail of FILE')."""
    sources: dict[str, str] = {}
    layout = find_splits(cfg.data) if not cfg.valid_data else None
    if cfg.valid_data or layout:
        files = dict(layout or {})
        files["train"] = files.get("train", cfg.data)
        if cfg.valid_data:
            files["valid"] = cfg.valid_data
        if cfg.test_data:
            files["test"] = cfg.test_data
        out = {k: _tokens_of(str(v), cfg) for k, v in files.items()}
        sources = {k: str(v) for k, v in files.items()}
        return out, sources
    toks = _tokens_of(cfg.data, cfg)
    n = len(toks)
    t_frac = 0.0 if cfg.test_data else cfg.test_fraction
    a, b = int(n * (1 - cfg.val_fraction - t_frac)), int(n * (1 - t_frac))
    out = {"train": toks[:a]}
    sources["train"] = cfg.data
    if b > a:
        out["valid"], sources["valid"] = toks[a:b], f"tail {cfg.val_fraction:g} of {cfg.data}"
    if cfg.test_data:
        out["test"], sources["test"] = _tokens_of(cfg.test_data, cfg), cfg.test_data
    elif n > b:
        out["test"], sources["test"] = toks[b:], f"tail {t_frac:g} of {cfg.data}"
    return out, sources


def split_ids(cfg, vocab: Vocab | None = None) -> tuple[Vocab, dict[str, np.ndarray], dict[str, str]]:
    """(vocabulary, ids per split, sources) of a language model's text: ``cfg`` (an LMConfig) names the files
    (``data``, ``valid_data``, ``test_data``, or a train/valid/test layout) or the tail fractions; the
    vocabulary is built from train unless given."""
    toks, sources = _split_tokens(cfg)
    if vocab is None:
        vocab = Vocab.build(toks["train"], cfg.tokenize, cfg.min_freq, cfg.max_size)
    return vocab, {k: vocab.encode(v) for k, v in toks.items()}, sources


def unigram_entropy(ids: np.ndarray, V: int, eval_ids: np.ndarray | None = None) -> float:
    """Cross-entropy in nats of ``eval_ids`` (default ``ids``) under add-one unigram counts of ``ids``."""
    p = (np.bincount(ids, minlength=V) + 1.0) / (len(ids) + V)
    e = ids if eval_ids is None else eval_ids
    return float(-np.log(p[e]).mean())


# ====================================================================== batching
def streams(ids: np.ndarray, B: int) -> np.ndarray:
    """(B, N // B): B contiguous streams, the tail that does not fill a row dropped (Zaremba et al. 2014)."""
    n = len(ids) // B
    return np.ascontiguousarray(ids[: n * B].reshape(B, n))           # (N,) -> (B, N // B)


class StreamBatches:
    """Windows of a (B, L) stream matrix as ``{"x": (B, T), "y": (B, T)}`` batches, y shifted by one.

    Window i covers columns ``[i*T, i*T + T)`` of x and ``[i*T + 1, i*T + T + 1)`` of y; the last window may
    be shorter. Consecutive windows continue each stream, so a model carrying its state across them reads the
    streams as if in one pass. A ``torch.utils.data.Dataset`` of ready batches (use ``batch_size=None``).
    """

    def __init__(self, data: np.ndarray, T: int):
        import torch
        self.data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.int64))   # (B, L)
        self.T = T
        self.n = max(0, math.ceil((self.data.shape[1] - 1) / T))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = i * self.T
        e = min(s + self.T, self.data.shape[1] - 1)
        return {"x": self.data[:, s:e], "y": self.data[:, s + 1:e + 1]}     # (B, T), (B, T)

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(self.n))

    @property
    def tokens(self) -> int:
        """Tokens predicted in one pass: B * (L - 1)."""
        return int(self.data.shape[0] * max(0, self.data.shape[1] - 1))
