r"""Audio input: reading, checking and resampling files, log-mel / MFCC features, data layouts, SpecAugment.

No torchaudio: files are read with soundfile (wav, flac, ogg), resampled with librosa (soxr) and featurised in
numpy with librosa's mel filterbank, so the features equal librosa's reference (``tests/test_audio.py``).

Features, one frame every ``hop`` samples (``center=True`` framing, zero padding, like librosa):

.. math::
    P_t(f) = |\mathrm{rfft}(w \cdot x_{t})|^2, \qquad
    \mathrm{logmel}_t = 10 \log_{10} \max(\epsilon, M P_t), \qquad
    \mathrm{mfcc}_t = \mathrm{DCT\!-\!II_{ortho}}(\mathrm{logmel}_t)_{0..n\_mfcc-1}

(``M`` is ``librosa.filters.mel``; no ``top_db`` floor, so every frame depends only on its own samples and the
features can be computed chunk by chunk: :class:`StreamingFeatures` gives the same frames as :func:`features`.)

Layouts accepted wherever an audio ``--data`` is (see :func:`read_labelled`):

* a folder of files whose names carry the label, ``{label}_{speaker}_{index}.wav`` (FSDD). Its official split
  puts indices 0-4 in test; ``DIR?test_speaker=NAME`` holds out one speaker instead;
* a folder of class sub-folders (``DIR/yes/*.wav``, ``DIR/no/*.wav``);
* a CSV/TSV manifest with a path column and a transcript (or label) column. Relative paths resolve against the
  manifest's folder and may not leave it unless ``allow_outside=1`` (``manifest.csv?allow_outside=1``).

Bad files (unreadable, empty, wrong rate when resampling is off, clipped) raise :class:`DataError` naming the file.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl

import numpy as np

from ..errors import DataError

__all__ = ["AUDIO_EXTENSIONS", "FeatureSpec", "read_audio", "file_rate", "features", "StreamingFeatures",
           "Utterance", "parse_source", "is_audio_source", "read_labelled", "read_manifest", "scan_folder",
           "split_utterances", "has_split", "labelled_features", "load", "concat_utterances", "write_wav",
           "spec_augment", "normalise", "resample_to", "DIGIT_WORDS"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ============================================================================ reading
def read_audio(path: str | Path, rate: int = 0, *, resample: bool = True, clip_fraction: float = 1e-3,
               mono: bool = True) -> tuple[np.ndarray, int]:
    """Read ``path`` into float32 samples in [-1, 1] (mono: channels averaged) at ``rate`` Hz.

    Args:
        rate: target rate; 0 keeps the file's rate.
        resample: convert other rates to ``rate`` (librosa/soxr). When False a file at another rate is an error.
        clip_fraction: raise when more than this fraction of samples sit at full scale (|x| >= 0.999), a sign
            of clipping; 1 disables the check.

    Returns ``(samples (N,), rate)``.
    """
    import soundfile as sf
    p = Path(path)
    if not p.is_file():
        raise DataError("audio file not found", path=p)
    if p.stat().st_size == 0:
        raise DataError("the audio file is empty (0 bytes)", path=p)
    try:
        x, sr = sf.read(str(p), dtype="float32", always_2d=True)            # (N, channels)
    except Exception as e:  # noqa: BLE001 - libsndfile's many errors
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read audio ({msg}); expected a wav, flac or ogg file", path=p) from None
    if x.shape[0] == 0:
        raise DataError("the audio file holds no samples", path=p)
    x = x.mean(axis=1) if mono else x[:, 0]                                 # (N,)
    if not np.isfinite(x).all():
        raise DataError("the audio holds NaN or infinite samples", path=p)
    if clip_fraction < 1:
        clipped = float((np.abs(x) >= 0.999).mean())
        if clipped > clip_fraction:
            raise DataError(f"the audio is clipped: {clipped:.2%} of samples are at full scale (limit "
                            f"{clip_fraction:.2%}); re-record or lower the gain, or raise clip_fraction", path=p)
    if rate and sr != rate:
        if not resample:
            raise DataError(f"sample rate {sr} Hz, expected {rate} Hz; convert the file or allow resampling",
                            path=p)
        x, sr = resample_to(x, sr, rate), rate
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def resample_to(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` (N,) at ``rate`` Hz as float32 samples at ``target`` Hz (librosa/soxr; unchanged when equal)."""
    if int(rate) == int(target):
        return np.asarray(x, dtype=np.float32)
    import librosa
    return librosa.resample(np.asarray(x, dtype=np.float32), orig_sr=int(rate), target_sr=int(target)).astype(
        np.float32)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Write 16-bit PCM wav (used by the concatenation builder's ``--write``)."""
    import soundfile as sf
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(p), np.clip(samples, -1, 1), rate, subtype="PCM_16")
    return p


# ============================================================================ features
@dataclass(frozen=True)
class FeatureSpec:
    """How frames are cut and summarised; stored in a run's meta so inference uses the same features."""

    kind: str = "logmel"          # logmel or mfcc
    rate: int = 8000              # sample rate the features are computed at
    n_mels: int = 40              # mel bands
    n_mfcc: int = 13              # cepstral coefficients for kind=mfcc
    win_ms: float = 25.0          # analysis window
    hop_ms: float = 10.0          # frame step
    fmin: float = 20.0            # lowest mel edge (Hz)
    fmax: float = 0.0             # highest mel edge (Hz); 0 = rate / 2

    @property
    def hop(self) -> int:
        return int(round(self.rate * self.hop_ms / 1000))

    @property
    def win(self) -> int:
        return int(round(self.rate * self.win_ms / 1000))

    @property
    def n_fft(self) -> int:
        return 1 << (self.win - 1).bit_length()                # 2 ** ceil(log2(win)), in integers

    @property
    def size(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def problems(self) -> list[str]:
        p = []
        if self.kind not in ("logmel", "mfcc"):
            p.append(f"features={self.kind!r}: expected logmel or mfcc")
        if self.rate < 1000 or self.n_mels < 1 or self.hop_ms <= 0 or self.win_ms < self.hop_ms:
            p.append(f"rate={self.rate}, n_mels={self.n_mels}, win_ms={self.win_ms}, hop_ms={self.hop_ms}: "
                     "expected rate >= 1000 Hz, n_mels >= 1 and win_ms >= hop_ms > 0")
        if self.kind == "mfcc" and not 1 <= self.n_mfcc <= self.n_mels:
            p.append(f"n_mfcc={self.n_mfcc}: expected 1 <= n_mfcc <= n_mels ({self.n_mels})")
        return p

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_BANKS: dict[FeatureSpec, tuple[np.ndarray, np.ndarray]] = {}


def _bank(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(window (n_fft,), mel matrix (n_mels, n_fft//2+1)) for ``spec``, cached."""
    if spec not in _BANKS:
        import librosa
        w = librosa.filters.get_window("hann", spec.win, fftbins=True)
        w = librosa.util.pad_center(w, size=spec.n_fft).astype(np.float64)
        mel = librosa.filters.mel(sr=spec.rate, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=spec.fmin,
                                  fmax=spec.fmax or spec.rate / 2).astype(np.float64)
        _BANKS[spec] = (w, mel)
    return _BANKS[spec]


BLOCK = 256     # frames per FFT + mel call: larger blocks' temporaries (MBs) cost more per frame than they save


def _frames_to_features(frames: np.ndarray, spec: FeatureSpec, at: np.ndarray | None = None) -> np.ndarray:
    """(T, n_fft) padded-signal frames (or, with ``at``, the rows ``frames[at]`` of a sliding-window view,
    gathered one block at a time so they are never all copied) -> (T, size) features (float32), ``BLOCK``
    frames at a time.

    Each frame's features depend on that frame alone, so blocks give exactly the whole call's values; above a
    few hundred frames one call's float64 temporaries (frames x window, the complex spectrum: MBs each) cost
    ~3x more per frame than small blocks (measured: 2000 frames of n_fft 256 took 6.2 ms in one call, 2.2 ms
    in blocks of 256; a serving tick of 200 streams has 2000)."""
    n = len(frames) if at is None else len(at)
    block = (lambda i: frames[i:i + BLOCK]) if at is None else (lambda i: frames[at[i:i + BLOCK]])
    if n <= BLOCK:
        return _block_features(block(0), spec)
    return np.concatenate([_block_features(block(i), spec) for i in range(0, n, BLOCK)])


def _block_features(frames: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    w, mel = _bank(spec)
    power = np.abs(np.fft.rfft(frames * w, axis=1)) ** 2                    # (T, n_fft//2+1)
    logmel = 10.0 * np.log10(np.maximum(power @ mel.T, 1e-10))              # (T, n_mels)
    if spec.kind == "mfcc":
        from scipy.fft import dct
        return dct(logmel, type=2, norm="ortho", axis=1)[:, : spec.n_mfcc].astype(np.float32)
    return logmel.astype(np.float32)


def features(samples: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(N,) samples at ``spec.rate`` -> (T, F) features, T = 1 + N // hop (librosa's ``center=True``)."""
    x = np.asarray(samples, dtype=np.float64)
    pad = spec.n_fft // 2
    xp = np.pad(x, (pad, pad))                                              # zero padding, like librosa 0.11
    T = 1 + (len(xp) - spec.n_fft) // spec.hop
    frames = np.lib.stride_tricks.sliding_window_view(xp, spec.n_fft)[:: spec.hop][:T]   # (T, n_fft)
    return _frames_to_features(frames, spec)


class StreamingFeatures:
    """Chunk-by-chunk :func:`features`: ``push(chunk)`` returns the frames now complete, ``finish()`` the rest.

    The frames of all calls joined equal ``features(whole_signal)``.
    """

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.buf = np.zeros(spec.n_fft // 2, dtype=np.float64)              # the left zero padding
        self.done = False

    def _emit(self) -> np.ndarray:
        s = self.spec
        if len(self.buf) < s.n_fft:
            return np.zeros((0, s.size), np.float32)
        T = 1 + (len(self.buf) - s.n_fft) // s.hop
        frames = np.lib.stride_tricks.sliding_window_view(self.buf, s.n_fft)[:: s.hop][:T]   # (T, n_fft)
        out = _frames_to_features(frames, s)
        self.buf = self.buf[T * s.hop:]
        return out

    def push(self, chunk: np.ndarray) -> np.ndarray:
        if self.done:
            raise RuntimeError("StreamingFeatures.push after finish(); make a new one per utterance")
        self.buf = np.concatenate([self.buf, np.asarray(chunk, dtype=np.float64)])
        return self._emit()

    def finish(self) -> np.ndarray:
        self.buf = np.concatenate([self.buf, np.zeros(self.spec.n_fft // 2)])
        self.done = True
        return self._emit()

    @staticmethod
    def push_many(streams: "list[StreamingFeatures]", chunks: list[np.ndarray | None], joined: bool = False
                  ) -> "list[np.ndarray] | tuple[np.ndarray, np.ndarray]":
        """``[s.push(c) for s, c in zip(streams, chunks)]`` (all with one spec) with one vectorised
        FFT + mel call for the frames of all streams: what a server tick does for its sessions. A chunk of
        None is that stream's ``finish()`` (its end padding, then no more pushes). ``joined``: the frames of
        all streams in one array (total, F) and each stream's frame count, instead of one array per stream.

        Every stream's buffer and chunk are joined into one signal and all frames cut from it with one
        gather, so the per-stream Python work is a few list appends and one slice (it was one concatenate
        and one strided view each, more than the FFT itself at a few hundred streams)."""
        if not streams:
            return []
        s = streams[0].spec
        n_fft, hop = s.n_fft, s.hop
        parts, lengths, ending = [], [], []
        for st, c in zip(streams, chunks):
            if st.done:
                raise RuntimeError("StreamingFeatures.push after finish(); make a new one per utterance")
            if c is None:                                                  # finish(): the end padding
                c = np.zeros(n_fft // 2)
                ending.append(st)
            parts += (st.buf, c)
            lengths.append(len(st.buf) + len(c))
        for st in ending:
            st.done = True
        signal = np.concatenate(parts, dtype=np.float64)                   # every stream's buffer + chunk
        n = np.asarray(lengths)
        ends = np.cumsum(n)
        starts = ends - n
        counts = np.where(n >= n_fft, 1 + (n - n_fft) // hop, 0)           # frames complete in each stream
        total = int(counts.sum())
        out = np.zeros((0, s.size), np.float32)
        if total:
            first = np.cumsum(counts) - counts
            at = np.repeat(starts - first * hop, counts) + np.arange(total) * hop     # each frame's start
            view = np.lib.stride_tricks.sliding_window_view(signal, n_fft)            # every window, no copy
            out = _frames_to_features(view, s, at)                                   # (total, size)
        keep = (starts + counts * hop).tolist()
        for st, a, b in zip(streams, keep, ends.tolist()):
            st.buf = signal[a:b].copy()                                    # the samples of frames to come
        return (out, counts) if joined else np.split(out, np.cumsum(counts)[:-1])


def normalise(feats: list[np.ndarray], how: str, mean=None, std=None) -> list[np.ndarray]:
    """``global`` (training mean/std, given), ``utterance`` (each its own) or ``none``."""
    if how == "utterance":
        return [((f - f.mean(0)) / np.maximum(f.std(0), 1e-5)).astype(np.float32) for f in feats]
    if how == "global":
        m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return [((f - m) / s).astype(np.float32) for f in feats]
    return feats


def spec_augment(x, lengths, *, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2,
                 time_width: int = 10, generator=None):
    """SpecAugment (Park et al. 2019) without warping: zero random bands of features and spans of frames.

    ``x`` (B, T, F) normalised features (zero = the mean), ``lengths`` (B,); returns a new tensor.
    """
    import torch
    x = x.clone()
    B, T, F = x.shape
    g = generator

    def rand(hi: int) -> int:
        return int(torch.randint(0, max(1, hi), (1,), generator=g))

    for b in range(B):
        L = int(lengths[b]) if lengths is not None else T
        for _ in range(freq_masks):
            w = rand(freq_width + 1)
            f0 = rand(F - w + 1)
            x[b, :, f0: f0 + w] = 0.0
        for _ in range(time_masks):
            w = min(rand(time_width + 1), L // 5)
            t0 = rand(L - w + 1)
            x[b, t0: t0 + w, :] = 0.0
    return x


# ============================================================================ layouts
@dataclass
class Utterance:
    """One recording (or a built one): samples are loaded lazily from ``path`` unless given."""

    path: str
    text: str                         # label (classification) or transcript (recognition)
    speaker: str = ""
    index: int = -1                   # FSDD recording index (official split: 0-4 test)
    samples: np.ndarray | None = None


def parse_source(data: str) -> tuple[Path, dict[str, str]]:
    """``"DIR?test_speaker=theo&features=mfcc"`` -> (Path(DIR), {"test_speaker": "theo", ...})."""
    base, _, query = str(data).partition("?")
    return Path(base), dict(parse_qsl(query))


def is_audio_source(data: str) -> bool:
    """True for a folder holding audio files (directly or in sub-folders) or an audio manifest."""
    p, _ = parse_source(data)
    if p.is_dir():
        return any(_audio_files(p)) or any(any(_audio_files(d)) for d in p.iterdir() if d.is_dir())
    return p.suffix.lower() in (".csv", ".tsv") and p.is_file() and _looks_like_manifest(p)


def _audio_files(folder: Path) -> Iterator[Path]:
    return (f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)


_PATH_COLS = ("path", "file", "filename", "audio", "wav", "audio_path")
_TEXT_COLS = ("transcript", "text", "sentence", "label", "words")


def _looks_like_manifest(p: Path) -> bool:
    try:
        with open(p, newline="", encoding="utf-8") as f:
            head = f.readline().lower()
    except (OSError, UnicodeDecodeError):
        return False
    cols = [c.strip() for c in head.replace("\t", ",").split(",")]
    return any(c in _PATH_COLS for c in cols)


def read_manifest(path: str | Path, allow_outside: bool = False) -> list[Utterance]:
    """A CSV/TSV manifest (header: a path column and a transcript/label column) -> utterances.

    Relative paths resolve against the manifest's folder; paths that leave it (``..``, absolute elsewhere,
    symlinks out) are refused unless ``allow_outside``. Every row is checked; all problems are reported at once.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("manifest not found", path=p)
    text = p.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise DataError("the manifest is empty; expected a header (path, transcript) and one row per file", path=p)
    delim = "\t" if p.suffix.lower() == ".tsv" or "\t" in text.splitlines()[0] else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delim))
    header = [h.strip().lower() for h in rows[0]]
    pcol = next((header.index(c) for c in _PATH_COLS if c in header), None)
    tcol = next((header.index(c) for c in _TEXT_COLS if c in header), None)
    if pcol is None or tcol is None:
        raise DataError(f"header {rows[0]}: expected a path column ({', '.join(_PATH_COLS)}) and a transcript "
                        f"column ({', '.join(_TEXT_COLS)})", path=p, line=1)
    root = p.parent.resolve()
    out, problems = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(pcol, tcol):
            problems.append(f"line {n}: {len(row)} field(s), expected at least {max(pcol, tcol) + 1}")
            continue
        rel, transcript = row[pcol].strip(), row[tcol].strip()
        if not rel:
            problems.append(f"line {n}: empty path")
            continue
        f = (root / rel).resolve()
        if not allow_outside and not f.is_relative_to(root):
            problems.append(f"line {n}: path {rel!r} leaves the manifest's folder {root}; move the file "
                            "under it or pass allow_outside=1 (DATA?allow_outside=1)")
            continue
        if not f.is_file():
            problems.append(f"line {n}: audio file {rel!r} not found (looked for {f})")
            continue
        if not transcript:
            problems.append(f"line {n}: empty transcript for {rel!r}")
            continue
        out.append(Utterance(str(f), transcript))
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n  - " + "\n  - ".join(problems)
        raise DataError(head, path=p)
    if not out:
        raise DataError("the manifest lists no files", path=p)
    return out


def scan_folder(folder: str | Path) -> list[Utterance]:
    """A folder of ``label_speaker_index.ext`` files, or of class sub-folders, -> utterances."""
    root = Path(folder)
    files = list(_audio_files(root))
    if files:
        out = []
        for f in files:
            parts = f.stem.split("_")
            idx = int(parts[2]) if len(parts) >= 3 and parts[2].isdigit() else -1
            out.append(Utterance(str(f), parts[0], parts[1] if len(parts) >= 2 else "", idx))
        return out
    out = [Utterance(str(f), d.name) for d in sorted(root.iterdir()) if d.is_dir() for f in _audio_files(d)]
    if not out:
        raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the folder or its sub-folders",
                        path=root)
    return out


def split_utterances(utts: list[Utterance], split: str, opts: dict[str, str], name: str) -> list[Utterance]:
    """The ``train`` or ``test`` part: ``test_speaker`` holds out a speaker, else FSDD indices 0-4 are test.

    Layouts without a natural split (class sub-folders, manifests) return every utterance for either split.
    """
    if split not in ("train", "test"):
        return utts
    speaker = opts.get("test_speaker")
    if speaker:
        speakers = sorted({u.speaker for u in utts})
        if speaker not in speakers:
            raise DataError(f"test_speaker={speaker!r} is not among the speakers {speakers}", path=name)
        return [u for u in utts if (u.speaker == speaker) == (split == "test")]
    if all(u.index >= 0 for u in utts):
        return [u for u in utts if (u.index < 5) == (split == "test")]
    return utts                       # no natural split: all of it (a separate test folder or manifest)


def has_split(data: str, options: dict[str, str] | None = None) -> bool:
    """True when ``data`` is an audio folder with a built-in test split (FSDD names, or a test speaker given
    in ``options`` or as ``?test_speaker=``)."""
    p, opts = parse_source(data)
    opts.update(options or {})
    if not p.is_dir():
        return False
    try:
        return bool(opts.get("test_speaker")) or all(u.index >= 0 for u in scan_folder(p))
    except DataError:
        return False


def read_labelled(data: str, split: str = "all", options: dict[str, str] | None = None
                  ) -> tuple[list[Utterance], dict[str, str]]:
    """Utterances of an audio folder or manifest (``split`` train / test / all) and the source's options: those
    of its query string (``DIR?test_speaker=NAME``), overridden by ``options`` (a task's config fields)."""
    p, opts = parse_source(data)
    opts.update(options or {})
    if p.is_dir():
        utts = scan_folder(p)
    elif p.is_file():
        utts = read_manifest(p, allow_outside=opts.get("allow_outside", "0") in ("1", "true", "yes"))
    else:
        raise DataError("audio folder or manifest not found", path=p)
    return split_utterances(utts, split, opts, str(p)), opts


_CACHE: dict[tuple, np.ndarray] = {}


def load(utt: Utterance, rate: int, **kw) -> np.ndarray:
    """The utterance's samples at ``rate`` (files are read once per process)."""
    if utt.samples is not None:
        return utt.samples
    key = (utt.path, rate, tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = read_audio(utt.path, rate, **kw)[0]
    return _CACHE[key]


# ============================================================================ concatenation builder
def concat_utterances(pool: list[Utterance], n: int, rate: int, *, min_words: int = 3, max_words: int = 7,
                      silence_ms: tuple[float, float] = (50.0, 400.0), noise: float = 1e-3,
                      seed: int = 0, words: dict[str, str] | None = None) -> list[Utterance]:
    """Build ``n`` multi-word utterances from single-word recordings of ONE speaker each.

    Each utterance: a random speaker, ``min_words``..``max_words`` random recordings of that speaker joined by
    random silences (``silence_ms``, with faint noise of std ``noise``), also before and after. The transcript
    spells the labels as words (digits -> "seven three nine"). The same ``seed`` gives the same utterances.
    """
    rng = np.random.default_rng(seed)
    words = words if words is not None else {str(i): w for i, w in enumerate(DIGIT_WORDS)}
    by_speaker: dict[str, list[Utterance]] = {}
    for u in pool:
        by_speaker.setdefault(u.speaker, []).append(u)
    speakers = sorted(by_speaker)
    if not speakers:
        raise DataError("no recordings to build utterances from", path="concat")
    out = []

    def silence() -> np.ndarray:
        k = int(rng.uniform(*silence_ms) * rate / 1000)
        return (rng.standard_normal(k) * noise).astype(np.float32)

    for i in range(n):
        spk = speakers[rng.integers(len(speakers))]
        mine = by_speaker[spk]
        picks = [mine[j] for j in rng.integers(len(mine), size=int(rng.integers(min_words, max_words + 1)))]
        parts = [silence()]
        for u in picks:
            parts += [load(u, rate), silence()]
        text = " ".join(words.get(u.text, u.text) for u in picks)
        out.append(Utterance(f"concat:{seed}:{i}", text, spk, -1, np.concatenate(parts)))
    return out


def file_rate(path: str | Path) -> int:
    """A file's sample rate from its header (DataError naming the file when unreadable)."""
    import soundfile as sf
    try:
        return int(sf.info(str(path)).samplerate)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                        path=path) from None


def labelled_features(data: str, split: str = "train") -> tuple[list[np.ndarray], np.ndarray, str]:
    """For classification: (features (T_i, F) per file, labels, display name) of an audio folder/manifest.

    Feature options come from the source's query string: ``DIR?features=mfcc&n_mels=40&rate=16000&norm=utterance``
    (defaults: log-mel, 40 bands, the first file's rate, no per-utterance mean/variance normalisation).
    """
    p, opts = parse_source(data)
    everything, _ = read_labelled(data, "all")
    utts = split_utterances(everything, split, opts, str(p))
    try:
        spec = FeatureSpec(kind=opts.get("features", "logmel"), n_mels=int(opts.get("n_mels", 40)),
                           n_mfcc=int(opts.get("n_mfcc", 13)),
                           rate=int(opts.get("rate", 0)) or file_rate(everything[0].path))
    except ValueError as e:
        raise DataError(f"bad audio option in {data!r}: {e}", path=p) from None
    if spec.problems():
        raise DataError("; ".join(spec.problems()), path=p)
    feats = [features(load(u, spec.rate), spec) for u in utts]
    norm = opts.get("norm", "none")
    if norm not in ("none", "utterance"):
        raise DataError(f"norm={norm!r} in {data!r}: expected none or utterance", path=p)
    return normalise(feats, norm), np.asarray([u.text for u in utts]), str(p)
