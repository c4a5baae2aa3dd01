"""Piano rolls: read them from the Boulanger-Lewandowski ``.mat`` files, a folder of MIDI files or the Bach
chorales music21 ships; write them back as MIDI and as a PNG.

A piano roll is a ``(T, P)`` uint8 array of 0/1: frame t, pitch ``low + p`` (MIDI numbers). The ``.mat`` files
hold 88 columns, MIDI 21 (A0) to 108 (C8).

Sources (``read_rolls``):

* ``*.mat``: MATLAB file with ``traindata``, ``validdata``, ``testdata`` cells of ``(T, 88)`` rolls (the
  JSB Chorales, Nottingham, MuseData and Piano-midi.de splits of Boulanger-Lewandowski et al. 2012).
* a folder (searched recursively) or a single ``.mid``/``.midi`` file: read with pretty_midi and quantised
  either to beats (``quantize="beats"``, ``frames_per_beat`` frames per beat, following tempo changes) or to
  time (``quantize="time"``, ``fs`` frames per second). Drum tracks are skipped unless ``drums``; ``programs``
  keeps only those General MIDI programs. Corrupt or empty files are skipped with one warning naming them and
  a count; a :class:`~grukit.errors.DataError` is raised when nothing is left.
* ``bach_chorales``: the 371 four-part chorales of music21's corpus, parsed once and cached as ``.npz`` in the
  user cache directory (``$GRUKIT_CACHE_DIR`` or platformdirs' ``user_cache_dir("grukit")``).
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["MusicSource", "RollSpec", "read_rolls", "read_mat", "read_midi_folder", "midi_to_roll",
           "roll_to_midi", "write_midi", "bach_chorales", "cache_dir", "BUILTIN_MUSIC", "split_indices",
           "PieceDataset", "budget_batches", "piece_loader", "eval_batches"]

MIDI_SUFFIXES = (".mid", ".midi", ".kar")
BUILTIN_MUSIC = {"bach_chorales": "the 371 four-part Bach chorales shipped by music21 (Riemenschneider "
                                  "numbering), parsed once and cached"}


@dataclass(frozen=True)
class RollSpec:
    """How notes become frames (the music config's data options)."""

    low_pitch: int = 21                 # MIDI number of column 0
    high_pitch: int = 108               # MIDI number of the last column (inclusive)
    quantize: str = "beats"             # beats | time
    frames_per_beat: int = 4            # quantize=beats
    fs: float = 8.0                     # quantize=time: frames per second
    out_of_range: str = "drop"          # drop | fold (move by octaves into the range)
    drums: bool = False                 # keep drum tracks
    programs: tuple[int, ...] = ()      # keep only these GM programs (0-127); empty = all

    @property
    def n_pitches(self) -> int:
        return self.high_pitch - self.low_pitch + 1

    @classmethod
    def from_config(cls, cfg) -> "RollSpec":
        return cls(cfg.low_pitch, cfg.high_pitch, cfg.quantize, cfg.frames_per_beat, cfg.fs, cfg.out_of_range,
                   cfg.drums, tuple(cfg.programs))


@dataclass
class MusicSource:
    """Rolls per split (``train``/``valid``/``test``; a MIDI folder has only ``all``), names and frame length."""

    splits: dict[str, list[np.ndarray]]
    names: dict[str, list[str]]
    name: str                            # display name of the source
    frame_seconds: float                 # seconds per frame for MIDI output (beats at 120 bpm for beat grids)
    frames_per_beat: int = 4             # frames per beat, for the tempo written to MIDI output


# ====================================================================== pitch range
def _place(pitches: np.ndarray, spec: RollSpec) -> np.ndarray:
    """Column index per pitch, -1 for notes dropped (out of range with out_of_range=drop)."""
    p = np.asarray(pitches, dtype=np.int64)
    if spec.out_of_range == "fold":
        while (p < spec.low_pitch).any() or (p > spec.high_pitch).any():
            if spec.n_pitches < 12:
                break
            p = np.where(p < spec.low_pitch, p + 12, p)
            p = np.where(p > spec.high_pitch, p - 12, p)
    col = p - spec.low_pitch
    return np.where((col >= 0) & (col < spec.n_pitches), col, -1)


def crop_mat_roll(roll: np.ndarray, spec: RollSpec, low: int = 21) -> np.ndarray:
    """A roll whose column 0 is MIDI ``low`` re-expressed in ``spec``'s pitch range."""
    T, P = roll.shape
    out = np.zeros((T, spec.n_pitches), np.uint8)
    t, c = np.nonzero(roll)
    col = _place(c + low, spec)
    keep = col >= 0
    out[t[keep], col[keep]] = 1
    return out


# ====================================================================== .mat files
def read_mat(path: str | Path, spec: RollSpec) -> MusicSource:
    """The train/valid/test splits of a Boulanger-Lewandowski ``.mat`` file."""
    from scipy.io import loadmat
    p = Path(path)
    try:
        m = loadmat(p)
    except Exception as e:  # noqa: BLE001 - scipy's many format errors
        raise DataError(f"cannot be read as a MATLAB .mat file: {e}", path=p) from None
    splits, names = {}, {}
    for key, split in (("traindata", "train"), ("validdata", "valid"), ("testdata", "test")):
        if key not in m:
            continue
        cells = np.asarray(m[key]).reshape(-1)
        rolls = []
        for i, r in enumerate(cells):
            r = np.asarray(r)
            if r.ndim != 2 or r.shape[1] != 88:
                raise DataError(f"{key}[{i}] has shape {r.shape}; expected (T, 88) piano rolls (MIDI 21-108)",
                                path=p)
            rolls.append(crop_mat_roll((r > 0).astype(np.uint8), spec))
        splits[split], names[split] = rolls, [f"{p.stem}/{split}/{i}" for i in range(len(rolls))]
    if "traindata" not in m:
        have = ", ".join(k for k in m if not k.startswith("__")) or "nothing"
        raise DataError(f"no 'traindata' variable; expected traindata, validdata, testdata cells of (T, 88) "
                        f"rolls, found {have}", path=p)
    # JSB Chorales are sampled every quarter note (0.5 s at 120 bpm); the others at an eighth note
    fpb = 1 if "jsb" in p.stem.lower() else 2
    return MusicSource(splits, names, p.stem, 0.5 / fpb, fpb)


# ====================================================================== MIDI files
def _beat_positions(pm, times: np.ndarray) -> np.ndarray:
    """Times in seconds -> positions in beats, following the file's tempo changes."""
    beats = pm.get_beats()
    if len(beats) < 2:
        tempo = pm.estimate_tempo() if len(beats) else 120.0
        return times * tempo / 60.0
    idx = np.arange(len(beats), dtype=np.float64)
    pos = np.interp(times, beats, idx)
    last = beats[-1] - beats[-2]                                     # extrapolate past the last beat
    after = times > beats[-1]
    pos[after] = idx[-1] + (times[after] - beats[-1]) / last
    before = times < beats[0]
    pos[before] = (times[before] - beats[0]) / (beats[1] - beats[0])
    return pos


def midi_to_roll(pm, spec: RollSpec) -> tuple[np.ndarray, int]:
    """(roll (T, P) uint8, notes dropped as out of range) of a ``pretty_midi.PrettyMIDI``."""
    starts, ends, pitches = [], [], []
    for inst in pm.instruments:
        if inst.is_drum and not spec.drums:
            continue
        if spec.programs and (inst.is_drum or inst.program not in spec.programs):
            continue
        for n in inst.notes:
            starts.append(n.start)
            ends.append(n.end)
            pitches.append(n.pitch)
    if not starts:
        return np.zeros((0, spec.n_pitches), np.uint8), 0
    s, e = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    if spec.quantize == "beats":
        s, e = _beat_positions(pm, s) * spec.frames_per_beat, _beat_positions(pm, e) * spec.frames_per_beat
    else:
        s, e = s * spec.fs, e * spec.fs
    f0 = np.round(s).astype(np.int64)
    f1 = np.maximum(np.round(e).astype(np.int64), f0 + 1)           # every note lasts at least one frame
    shift = min(0, int(f0.min()))                                    # pickup notes before time 0
    f0, f1 = f0 - shift, f1 - shift
    col = _place(np.asarray(pitches), spec)
    keep = col >= 0
    roll = np.zeros((int(f1[keep].max()) if keep.any() else 0, spec.n_pitches), np.uint8)
    for a, b, c in zip(f0[keep], f1[keep], col[keep]):
        roll[a:b, c] = 1
    return roll, int((~keep).sum())


def _midi_files(p: Path) -> list[Path]:
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MIDI_SUFFIXES)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Warn about a folder's skipped files once per process: training, evaluation and generation each read
    the folder again, and the same list need not be printed each time."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def read_midi_folder(path: str | Path, spec: RollSpec, max_files: int = 0) -> MusicSource:
    """Every MIDI file under ``path`` (or the one file); bad files skipped with a warning naming them."""
    import pretty_midi
    p = Path(path)
    files = _midi_files(p)
    if not files:
        raise DataError(f"no MIDI files ({', '.join(MIDI_SUFFIXES)}) found", path=p)
    if max_files > 0:
        files = files[:max_files]
    rolls, names, bad, dropped = [], [], [], 0
    for f in files:
        if f.stat().st_size == 0:
            bad.append(f"{f.name} (empty file)")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")                      # pretty_midi warns on odd meta events
                pm = pretty_midi.PrettyMIDI(str(f))
            roll, n_out = midi_to_roll(pm, spec)
        except Exception as e:  # noqa: BLE001 - mido/pretty_midi raise many kinds on corrupt files
            bad.append(f"{f.name} ({type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else 'corrupt'})")
            continue
        dropped += n_out
        if not roll.any():
            bad.append(f"{f.name} (no notes{' in the pitch range' if n_out else ''})")
            continue
        rolls.append(roll)
        names.append(str(f.relative_to(p)) if p.is_dir() else f.name)
    if bad:
        shown = "; ".join(bad[:20]) + (f"; ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        _warn_once(f"{p}: skipped {len(bad)} of {len(files)} MIDI file(s): {shown}")
    if not rolls:
        raise DataError(f"none of the {len(files)} MIDI file(s) could be used ({len(bad)} corrupt, empty or "
                        "without notes in the pitch range)", path=p)
    if dropped:
        _warn_once(f"{p}: {dropped} note(s) outside MIDI {spec.low_pitch}-{spec.high_pitch} were dropped "
                   "(widen --low-pitch/--high-pitch or pass --out-of-range fold)")
    frame_seconds = 0.5 / spec.frames_per_beat if spec.quantize == "beats" else 1.0 / spec.fs
    return MusicSource({"all": rolls}, {"all": names}, p.name, frame_seconds, spec.frames_per_beat)


# ====================================================================== the Bach chorales (music21)
def cache_dir() -> Path:
    """``$GRUKIT_CACHE_DIR`` or the platform's user cache directory for grukit."""
    env = os.environ.get("GRUKIT_CACHE_DIR")
    if env:
        return Path(env)
    try:
        from platformdirs import user_cache_dir
        return Path(user_cache_dir("grukit"))
    except ImportError:
        return Path.home() / ".cache" / "grukit"


def _chorale_roll(score, spec: RollSpec) -> np.ndarray:
    fpb = spec.frames_per_beat                                       # frames per quarter note
    starts, ends, pitches = [], [], []
    for el in score.flatten().notes:
        off, dur = float(el.offset), float(el.quarterLength)
        for pitch in getattr(el, "pitches", ()):
            starts.append(off)
            ends.append(off + dur)
            pitches.append(pitch.midi)
    if not starts:
        return np.zeros((0, spec.n_pitches), np.uint8)
    f0 = np.round(np.asarray(starts) * fpb).astype(np.int64)
    f1 = np.maximum(np.round(np.asarray(ends) * fpb).astype(np.int64), f0 + 1)
    f0, f1 = f0 - f0.min(), f1 - f0.min()
    col = _place(np.asarray(pitches), spec)
    roll = np.zeros((int(f1.max()), spec.n_pitches), np.uint8)
    for a, b, c in zip(f0, f1, col):
        if c >= 0:
            roll[a:b, c] = 1
    return roll


def bach_chorales(spec: RollSpec, max_files: int = 0) -> MusicSource:
    """The music21 Bach chorales as rolls at ``frames_per_beat`` frames per quarter note (cached ``.npz``)."""
    try:
        import music21  # noqa: F401
    except ImportError:
        raise DataError("the built-in set needs music21: pip install 'grukit[music]'", path="bach_chorales") \
            from None
    key = f"{spec.frames_per_beat}-{spec.low_pitch}-{spec.high_pitch}-{spec.out_of_range}-{max_files}"
    cache = cache_dir() / "music" / f"bach_chorales-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
    if cache.is_file():
        try:
            z = np.load(cache, allow_pickle=False)
            rolls = np.split(z["rolls"], np.cumsum(z["lengths"])[:-1])
            return MusicSource({"all": rolls}, {"all": [str(n) for n in z["names"]]}, "bach_chorales",
                               0.5 / spec.frames_per_beat, spec.frames_per_beat)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
            pass
    from music21 import corpus
    rolls, names = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for score in corpus.chorales.Iterator(returnType="stream"):
            roll = _chorale_roll(score, spec)
            if roll.any():
                rolls.append(roll)
                names.append(str(score.metadata.title if score.metadata and score.metadata.title
                                 else f"chorale {len(names)}"))
            if 0 < max_files <= len(rolls):
                break
    if not rolls:
        raise DataError("music21's chorale iterator yielded no usable chorales", path="bach_chorales")
    from ..io import atomic_write
    buf = io.BytesIO()
    np.savez_compressed(buf, rolls=np.concatenate(rolls), lengths=np.array([len(r) for r in rolls]),
                        names=np.array(names))
    try:
        atomic_write(cache, buf.getvalue())
    except OSError as e:
        warnings.warn(f"could not cache the chorales in {cache}: {e}", stacklevel=2)
    return MusicSource({"all": rolls}, {"all": names}, "bach_chorales", 0.5 / spec.frames_per_beat,
                       spec.frames_per_beat)


# ====================================================================== dispatch
def read_rolls(data: str, spec: RollSpec, max_files: int = 0) -> MusicSource:
    """Rolls from a ``.mat`` file, a MIDI file or folder, or ``bach_chorales``."""
    p = Path(data)
    if not p.exists():
        if data in BUILTIN_MUSIC:
            return bach_chorales(spec, max_files)
        from ..errors import nearest
        raise DataError(f"no such file or folder{nearest(data, BUILTIN_MUSIC)}; expected a .mat file, a MIDI "
                        f"file or folder, or a built-in set ({', '.join(BUILTIN_MUSIC)})", path=p)
    if p.is_file() and p.stat().st_size == 0:
        raise DataError("the file is empty", path=p)
    if p.is_file() and p.suffix.lower() == ".mat":
        return read_mat(p, spec)
    if p.is_dir() or p.suffix.lower() in MIDI_SUFFIXES:
        return read_midi_folder(p, spec, max_files)
    raise DataError(f"unknown file type {p.suffix!r}; expected .mat, a MIDI file ({', '.join(MIDI_SUFFIXES)}) "
                    "or a folder of MIDI files", path=p)


# ====================================================================== writing
def roll_to_midi(roll: np.ndarray, frame_seconds: float, low_pitch: int = 21, program: int = 0,
                 velocity: int = 80, frames_per_beat: int = 4):
    """A ``pretty_midi.PrettyMIDI`` with one note per run of 1s in each column of ``roll`` (T, P); its tempo
    puts a beat every ``frames_per_beat`` frames."""
    import pretty_midi
    roll = np.asarray(roll) > 0
    tempo = 60.0 / (frame_seconds * frames_per_beat)
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(np.clip(tempo, 20, 400)))
    inst = pretty_midi.Instrument(program=program, name="grukit")
    T = roll.shape[0]
    padded = np.vstack([np.zeros((1, roll.shape[1]), bool), roll, np.zeros((1, roll.shape[1]), bool)])
    change = np.diff(padded.astype(np.int8), axis=0)                 # (T+1, P): +1 onset, -1 offset
    for c in range(roll.shape[1]):
        on = np.flatnonzero(change[:, c] == 1)
        off = np.flatnonzero(change[:, c] == -1)
        for a, b in zip(on, off):
            inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(low_pitch + c),
                                               start=float(a * frame_seconds), end=float(min(b, T) * frame_seconds)))
    inst.notes.sort(key=lambda n: (n.start, n.pitch))
    pm.instruments.append(inst)
    return pm


def write_midi(roll: np.ndarray, path: str | Path, frame_seconds: float, low_pitch: int = 21,
               program: int = 0, frames_per_beat: int = 4) -> Path:
    """Write ``roll`` as a MIDI file (atomically)."""
    from ..io import atomic_write
    buf = io.BytesIO()
    roll_to_midi(roll, frame_seconds, low_pitch, program, frames_per_beat=frames_per_beat).write(buf)
    return atomic_write(path, buf.getvalue())


# ====================================================================== splits and batches
def split_indices(source: MusicSource, val_fraction: float, test_fraction: float, seed: int = 0
                 ) -> dict[str, list[int]]:
    """Indices of the train/valid/test pieces: the file's own split (indices into each split's list), else a
    seeded split of ``source.splits["all"]`` by fraction (at least one piece per asked-for part from 3 pieces)."""
    if "train" in source.splits:
        return {k: list(range(len(source.splits.get(k, [])))) for k in ("train", "valid", "test")}
    n = len(source.splits["all"])
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n)) if n >= 3 else 0
    n_val = int(round(val_fraction * n)) if n >= 3 else 0
    if n >= 3:
        n_test, n_val = max(n_test, 1 if test_fraction > 0 else 0), max(n_val, 1 if val_fraction > 0 else 0)
    return {"train": order[n_test + n_val:].tolist(), "valid": order[n_test:n_test + n_val].tolist(),
            "test": order[:n_test].tolist()}


class PieceDataset:
    """Teacher-forcing items ``{"x": previous frames, "y": frames, "lengths": T}`` of rolls (T, P): x is the
    roll shifted one frame later (zeros first); ``chunk`` > 0 cuts pieces into windows of that many frames."""

    def __init__(self, rolls: list[np.ndarray], chunk: int = 0):
        self.items = []
        for r in rolls:
            r = np.asarray(r, np.float32)
            x = np.vstack([np.zeros((1, r.shape[1]), np.float32), r[:-1]])          # (T, P) previous frames
            step = chunk if chunk > 0 else len(r)
            for s in range(0, len(r), step):
                if len(r[s:s + step]) >= (2 if chunk > 0 and s > 0 else 1):
                    self.items.append({"x": x[s:s + step], "y": r[s:s + step], "lengths": len(r[s:s + step])})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    def frames(self) -> int:
        return sum(it["lengths"] for it in self.items)


def budget_batches(lengths: list[int], frames: int) -> list[list[int]]:
    """Indices grouped by similar length, each group padded to at most ``frames`` frames (at least one piece)."""
    order = np.argsort(lengths)[::-1]
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[cur[0]] > frames:
            batches.append(cur)
            cur = []
        cur.append(int(i))
    return batches + ([cur] if cur else [])


def piece_loader(rolls: list[np.ndarray], batch_size: int, chunk: int = 0, num_workers: int = 0, seed: int = 0):
    """Training batches: the shared reproducible shuffled loader of :mod:`grukit.data.batching`."""
    from .batching import loader
    return loader(PieceDataset(rolls, chunk), batch_size, True, num_workers, seed)


def eval_batches(rolls: list[np.ndarray], frames: int = 16384):
    """Whole pieces in length order, at most ``frames`` padded frames a batch: ``(DataLoader, groups)`` where
    ``groups[i]`` are the piece indices of batch i."""
    import torch
    from .batching import collate
    ds = PieceDataset(rolls, chunk=0)
    groups = budget_batches([it["lengths"] for it in ds.items], frames)
    return torch.utils.data.DataLoader(ds, batch_sampler=groups, collate_fn=collate), groups
