"""Fuzzing every loader (hypothesis): whatever the bytes, a loader returns data or raises a grukit error that
names the file; never a raw traceback from deep inside a library, never a hang.

The default suite tries FUZZ_EXAMPLES inputs per loader (20); a release check runs more with
``GRUKIT_FUZZ_EXAMPLES=500 make test`` (or ``pytest tests/test_fuzz_loaders.py``).
"""
from __future__ import annotations

import io
import os
import struct
import shutil
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grukit.errors import GrukitError
from grukit.tasks import registry

FUZZ_EXAMPLES = int(os.environ.get("GRUKIT_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

TRIED: dict[str, int] = {}
PREFIX = f"grukit-fuzz-{os.getpid()}-"        # every example's folder; removed after the example

# task -> (file suffix, options that keep prepare() cheap)
LOADERS = {
    "forecast": (".csv", dict(target="y", time_col="t", lookback=4, horizon=2)),
    "classify": (".npz", {}),
    "autoencoder": (".csv", dict(window=4)),
    "lm": (".txt", dict(bptt=4, batch_size=2)),
    "music": (".mid", {}),
    "speech": (".tsv", {}),
}


def _prepare(task: str, path: Path, options: dict) -> None:
    entry = registry.get(task)
    cfg_cls = entry.config_class()
    known = {k: v for k, v in options.items() if k in cfg_cls.field_names()}
    TRIED[task] = TRIED.get(task, 0) + 1
    try:
        cfg = cfg_cls.from_dict({"data": str(path), **known})
        entry.load().prepare(cfg)
    except GrukitError as e:
        assert str(e).strip(), "a grukit error must say what is wrong"
    except MemoryError:  # pragma: no cover
        pytest.fail(f"{task}: loading {path.name} ran out of memory")
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    """Remove the example's temporary folder (the fuzzer writes hundreds of them)."""
    if path.parent.name.startswith(PREFIX):
        shutil.rmtree(path.parent, ignore_errors=True)


def _write(data: bytes, suffix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=PREFIX))
    p = d / f"input{suffix}"
    p.write_bytes(data)
    return p


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10 ** 12, 10 ** 12),
                    st.sampled_from(["", "abc", "1e400", "-", "NaN", "∞"]))


@st.composite
def csv_text(draw) -> bytes:
    cols = draw(st.lists(st.sampled_from(["t", "y", "x", "id", "label", "Y", " y"]), min_size=0, max_size=4,
                         unique=True))
    rows = draw(st.lists(st.lists(numbers, min_size=len(cols), max_size=len(cols) + 1), max_size=30))
    text = ",".join(cols) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows)
    cut = draw(st.integers(0, len(text)))
    enc = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    return text[:cut].encode(enc, errors="replace")


@pytest.mark.parametrize("task", ["forecast", "autoencoder"])
@FUZZ
@given(data=st.one_of(csv_text(), st.binary(max_size=512)))
def test_series_csv(task, data):
    suffix, options = LOADERS[task]
    _prepare(task, _write(data, suffix), options)


@FUZZ
@given(kind=st.sampled_from(["shapes", "nan", "garbage", "truncated"]), seed=st.integers(0, 10 ** 6))
def test_npz_sequences(kind, seed):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    N, T, F = rng.integers(0, 6, 3)
    X = rng.standard_normal((N, T, F)).astype("float32") * 10 ** rng.integers(0, 30)
    y = rng.integers(0, 3, rng.integers(0, 7))
    if kind == "nan" and X.size:
        X.flat[rng.integers(0, X.size)] = np.nan
    arrays = {"X": X, "y": y}
    if kind == "shapes":
        arrays = {"X": rng.standard_normal(rng.integers(1, 5, rng.integers(1, 5))), "y": y,
                  "lengths": rng.integers(-3, 9, rng.integers(0, 6))}
    np.savez(buf, **arrays)
    data = buf.getvalue()
    if kind == "truncated":
        data = data[: rng.integers(0, len(data))]
    elif kind == "garbage":
        data = rng.bytes(int(rng.integers(0, 400)))
    _prepare("classify", _write(data, ".npz"), {})


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=200).map(lambda s: s.encode("utf-8")),
                      st.text(max_size=200).map(lambda s: s.encode("utf-16"))),
       tokenize=st.sampled_from(["char", "word", "byte"]))
def test_text(data, tokenize):
    _prepare("lm", _write(data, ".txt"), dict(LOADERS["lm"][1], tokenize=tokenize))


def _midi_bytes(rng) -> bytes:
    pretty_midi = pytest.importorskip("pretty_midi")
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=int(rng.integers(0, 128)), is_drum=bool(rng.integers(0, 2)))
    for _ in range(int(rng.integers(0, 20))):
        start = float(rng.uniform(0, 10))
        inst.notes.append(pretty_midi.Note(int(rng.integers(1, 128)), int(rng.integers(0, 128)), start,
                                           start + float(rng.uniform(0.01, 2))))
    pm.instruments.append(inst)
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


@FUZZ
@given(kind=st.sampled_from(["midi", "truncated", "garbage", "mat-garbage"]), seed=st.integers(0, 10 ** 6))
def test_music(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "mat-garbage":
        _prepare("music", _write(rng.bytes(int(rng.integers(0, 600))), ".mat"), {})
        return
    data = _midi_bytes(rng) if kind != "garbage" else b"MThd" + rng.bytes(int(rng.integers(0, 300)))
    if kind == "truncated":
        data = data[: rng.integers(0, len(data) + 1)]
    _prepare("music", _write(data, ".mid"), {})


def _wav(rng) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(int(rng.integers(1, 3)))
        w.setsampwidth(2)
        w.setframerate(int(rng.choice([8000, 16000, 44100])))
        n = int(rng.integers(0, 4000))
        w.writeframes(struct.pack(f"<{n}h", *rng.integers(-32768, 32767, n).tolist()))
    return buf.getvalue()


@FUZZ
@given(kind=st.sampled_from(["ok", "truncated", "garbage", "escape", "missing"]), seed=st.integers(0, 10 ** 6))
def test_audio_manifest(kind, seed):
    rng = np.random.default_rng(seed)
    d = Path(tempfile.mkdtemp(prefix=PREFIX))
    wav = _wav(rng)
    if kind == "truncated":
        wav = wav[: rng.integers(0, len(wav) + 1)]
    elif kind == "garbage":
        wav = rng.bytes(int(rng.integers(0, 500)))
    (d / "a.wav").write_bytes(wav)
    target = {"escape": "../../etc/passwd", "missing": "nope.wav"}.get(kind, "a.wav")
    (d / "m.tsv").write_text(f"path\ttranscript\n{target}\tone two\n{target}\tthree\n")
    _prepare("speech", d / "m.tsv", {})


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
       suffix=st.sampled_from([".yaml", ".toml", ".json"]))
def test_config_files(data, suffix):
    from grukit.config import load_config_file
    from grukit.tasks.forecast_config import ForecastConfig
    p = _write(data, suffix)
    TRIED["config"] = TRIED.get("config", 0) + 1
    try:
        ForecastConfig.from_dict(load_config_file(p, "forecast"))
    except GrukitError as e:
        assert str(e).strip()
    finally:
        _remove(p)


@pytest.fixture(scope="module", autouse=True)
def _report_how_many_inputs_were_tried():
    """After this file's tests: print the count per loader (the number quoted in the closing note)."""
    yield
    print("\nfuzzed inputs per loader:", TRIED)
    assert sum(TRIED.values()) > 0
    left = sorted(Path(tempfile.gettempdir()).glob(PREFIX + "*"))
    assert not left, f"{len(left)} temporary folder(s) of this run were left behind, e.g. {left[0]}"
