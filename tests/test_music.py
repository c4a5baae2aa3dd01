"""Music task: the NLL metric by hand, NADE normalisation, MIDI round trips, reproducible generation, bad input,
and train/evaluate/generate from Python and the CLI on a MIDI folder, a .mat file and the chorales."""
from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from grukit.data.music import RollSpec, read_rolls, roll_to_midi, write_midi
from grukit.errors import ConfigError, DataError
from grukit.tasks.music import NADEHead, frame_accuracy, frame_nll
from tests.conftest import TINY, TOL

pytest.importorskip("pretty_midi")

TINY = TINY["music"]


def _roll(T=24, P=88, seed=0, density=0.06) -> np.ndarray:
    r = (np.random.default_rng(seed).random((T, P)) < density).astype(np.uint8)
    r[0, 40] = 1                                          # never an empty piece
    return r


@pytest.fixture
def midi_dir(tmp_path) -> Path:
    d = tmp_path / "midi"
    d.mkdir()
    for i in range(6):
        write_midi(_roll(40 + 8 * i, seed=i), d / f"piece{i}.mid", frame_seconds=0.125)
    return d


# ------------------------------------------------------------------ metrics
def test_frame_nll_matches_hand_computation():
    logits = torch.tensor([[[0.0, 2.0, -1.0], [1.5, -0.5, 0.3]]])             # (B=1, T=2, P=3)
    v = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]])

    def nll(z, x):
        p = 1 / (1 + math.exp(-z))
        return -math.log(p) if x else -math.log(1 - p)

    hand = [sum(nll(z, x) for z, x in zip(zs, xs)) for zs, xs in zip(logits[0].tolist(), v[0].tolist())]
    assert frame_nll(logits, v)[0].tolist() == pytest.approx(hand, rel=1e-6)
    # the per-time-step average over frames, as the task's loss computes it with padding masked out
    from grukit.tasks.music import MusicTask
    from grukit.tasks.music_config import MusicConfig
    task = MusicTask(MusicConfig(hidden_size=4), {"input_size": 3})
    padded = torch.cat([logits, torch.zeros(1, 1, 3)], 1), torch.cat([v, torch.ones(1, 1, 3)], 1)
    loss = task.loss((padded[0], None), padded[1], {"lengths": torch.tensor([2])})
    assert float(loss) == pytest.approx(sum(hand) / 2, rel=1e-6)


def test_frame_accuracy_bay_2009():
    pred = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 1]]])
    true = torch.tensor([[[1, 0, 1, 0], [0, 0, 0, 1]]])
    tp, den = frame_accuracy(pred, true)
    assert (tp, den) == (2.0, 4.0)                         # TP=2, FP=1, FN=1


def test_nade_is_normalised_and_matches_sequential_sampling_logits():
    torch.manual_seed(0)
    P = 4
    head = NADEHead(3, P, hidden=5).eval()
    h = torch.randn(1, 1, 3)
    frames = torch.tensor(list(itertools.product([0.0, 1.0], repeat=P)))   # all 16 frames
    with torch.no_grad():
        logits = head(h.expand(1, len(frames), 3), frames.unsqueeze(0))      # (1, 16, P)
    total = torch.exp(-frame_nll(logits, frames.unsqueeze(0))).sum()
    assert float(total) == pytest.approx(1.0, abs=1e-5)
    # the parallel (cumsum) logits equal the note-by-note computation used for sampling
    e = h[0].detach()
    for v in frames[[3, 10, 15]]:
        seen = []
        with torch.no_grad():
            head._autoregress(e, lambda z, it=iter(v.tolist()): (seen.append(float(z)), torch.tensor([next(it)]))[1])
        k = int(frames.tolist().index(v.tolist()))
        assert seen == pytest.approx(logits[0, k].tolist(), abs=1e-5)


# ------------------------------------------------------------------ MIDI
@pytest.mark.parametrize("quantize", ["time", "beats"])
def test_roll_midi_roll_round_trip(tmp_path, quantize):
    roll = _roll(50, seed=3)
    roll[10:20, 5] = 1                                    # a long note and a note at the top key
    roll[49, 87] = 1
    path = write_midi(roll, tmp_path / "a.mid", frame_seconds=0.125)
    spec = RollSpec(quantize=quantize, fs=8.0, frames_per_beat=4)
    back = read_rolls(str(path), spec).splits["all"][0]
    np.testing.assert_array_equal(back, roll)


def test_pitch_range_drop_and_fold(tmp_path):
    roll = np.zeros((4, 88), np.uint8)
    roll[0, 0] = roll[1, 87] = roll[2, 40] = 1            # A0, C8, C#4
    pm = roll_to_midi(roll, 0.125)
    path = tmp_path / "r.mid"
    pm.write(str(path))
    with pytest.warns(UserWarning, match="2 note"):
        narrow = read_rolls(str(path), RollSpec(low_pitch=48, high_pitch=72, quantize="time")).splits["all"][0]
    assert narrow.shape[1] == 25 and narrow.sum() == 1   # only C#4 (MIDI 61) is in 48-72
    folded = read_rolls(str(path), RollSpec(low_pitch=48, high_pitch=72, quantize="time",
                                            out_of_range="fold")).splits["all"][0]
    assert folded.sum() == 3


def test_drums_and_programs(tmp_path):
    import pretty_midi
    pm = pretty_midi.PrettyMIDI()
    for prog, drum, pitch in ((0, False, 60), (40, False, 64), (0, True, 38)):
        inst = pretty_midi.Instrument(program=prog, is_drum=drum)
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=0.0, end=0.5))
        pm.instruments.append(inst)
    path = tmp_path / "band.mid"
    pm.write(str(path))
    count = lambda **kw: int(read_rolls(str(path), RollSpec(quantize="time", **kw)).splits["all"][0][0].sum())
    assert count() == 2 and count(drums=True) == 3 and count(programs=(40,)) == 1


# ------------------------------------------------------------------ bad input
def test_corrupt_and_empty_midi_files_are_skipped_with_a_warning(midi_dir):
    (midi_dir / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (midi_dir / "empty.mid").write_bytes(b"")
    import pretty_midi
    pretty_midi.PrettyMIDI().write(str(midi_dir / "silent.mid"))
    with pytest.warns(UserWarning) as rec:
        src = read_rolls(str(midi_dir), RollSpec(quantize="time"))
    msg = " ".join(str(w.message) for w in rec)
    assert "skipped 3 of 9" in msg and all(n in msg for n in ("broken.mid", "empty.mid", "silent.mid"))
    assert len(src.splits["all"]) == 6
    with warnings.catch_warnings(record=True) as again:                     # evaluation reads the folder again:
        warnings.simplefilter("always")                                     # the list is printed once only
        read_rolls(str(midi_dir), RollSpec(quantize="time"))
    assert not [w for w in again if "skipped" in str(w.message)]


def test_nothing_usable_is_an_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.mid").write_bytes(b"not midi at all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of the 1 MIDI"):
            read_rolls(str(d), RollSpec())
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no MIDI files"):
        read_rolls(str(tmp_path / "none"), RollSpec())
    with pytest.raises(DataError, match="bach_chorales"):
        read_rolls("bach_chorale", RollSpec())
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        read_rolls(str(tmp_path / "a.txt"), RollSpec())
    from scipy.io import savemat
    savemat(tmp_path / "m.mat", {"foo": np.zeros(3)})
    with pytest.raises(DataError, match="traindata"):
        read_rolls(str(tmp_path / "m.mat"), RollSpec())


def test_bad_config_names_every_problem():
    from grukit.tasks.music_config import MusicConfig
    with pytest.raises(ConfigError) as e:
        MusicConfig.from_dict({"low_pitch": 90, "high_pitch": 60, "output": "nad", "chunk": 1})
    text = str(e.value)
    assert "high_pitch" in text and "did you mean 'nade'" in text and "chunk=1" in text


# ------------------------------------------------------------------ train / evaluate / generate
def test_train_evaluate_generate_midi_folder_python(midi_dir, tmp_path):
    from grukit.train import fit
    run = fit("music", data=str(midi_dir), out=tmp_path / "run", quantize="time", fs=8.0, **TINY)
    m = run.evaluate()
    assert set(m) >= {"grukit", "pitch_frequency"} and m["grukit"]["nll"] > 0
    assert (run.path / "plots" / "test_piece.png").is_file()
    from grukit.tasks import music
    a = music.generate_run(run, run.models(), length=20, seed=7, out=tmp_path / "a.mid")
    b = music.generate_run(run, run.models(), length=20, seed=7, out=tmp_path / "b.mid")
    c = music.generate_run(run, run.models(), length=20, seed=8, out=tmp_path / "c.mid", temperature=2.0)
    assert a[1].suffix == ".png" and a[1].is_file()
    ra, rb, rc = (read_rolls(str(p[0]), RollSpec(quantize="time", fs=8.0)).splits["all"][0] for p in (a, b, c))
    np.testing.assert_array_equal(ra, rb)
    assert ra.shape != rc.shape or (ra != rc).any()
    z1, z2 = (music.generate_run(run, run.models(), length=10, seed=s, temperature=0, out=tmp_path / f"z{s}.mid")
              for s in (1, 2))
    assert z1[0].read_bytes() == z2[0].read_bytes()                           # temperature 0: no sampling
    primed = music.generate_run(run, run.models(), prompt=str(midi_dir / "piece0.mid"), length="1s", seed=1,
                            out=tmp_path / "p.mid", primer_frames=8)
    roll = read_rolls(str(primed[0]), RollSpec(quantize="time", fs=8.0)).splits["all"][0]
    ref = read_rolls(str(midi_dir / "piece0.mid"), RollSpec(quantize="time", fs=8.0)).splits["all"][0]
    np.testing.assert_array_equal(roll[:8], ref[:8])      # the primer is kept, then 8 frames (1 s) follow
    assert len(roll) <= 16
    with pytest.raises(ConfigError, match="top-k"):
        music.generate_run(run, run.models(), top_k=5)
    with pytest.raises(ConfigError, match="data:0 to"):
        music.generate_run(run, run.models(), prompt="data:99")


def test_nade_output_on_mat_file_cli(data_dir, tmp_path):
    from tests.conftest import need
    mat = need(data_dir / "polyphonic_mat" / "JSB_Chorales.mat")
    from grukit.cli import main
    out = tmp_path / "jsb"
    rc = main(["train", "music", "--data", str(mat), "--out", str(out), "--output", "nade", "--hidden-size", "8",
               "--nade-hidden", "4", "--max-epochs", "1", "--limit-train-batches", "2", "--no-progress"])
    assert rc == 0
    import json
    m = json.loads((out / "metrics.json").read_text())
    assert m["grukit"]["frames"] == 4725 and m["Chung2014_GRU"]["nll"] == 8.54
    assert main(["evaluate", str(out)]) == 0
    assert main(["generate", str(out), "--prompt", "data:2", "--primer-frames", "4", "--seconds", "3", "--seed",
                 "3", "--out", str(tmp_path / "g.mid")]) == 0                  # JSB: 0.5 s per frame
    assert (tmp_path / "g.mid").is_file() and (tmp_path / "g.png").is_file()
    g = read_rolls(str(tmp_path / "g.mid"), RollSpec(quantize="time", fs=2.0)).splits["all"][0]
    assert len(g) <= 4 + 6
    assert main(["generate", str(out), "--top-k", "3"]) == 2


def test_bach_chorales_builtin(tmp_path, monkeypatch):
    pytest.importorskip("music21", reason="the built-in chorales ship with music21")
    monkeypatch.setenv("GRUKIT_CACHE_DIR", str(tmp_path / "cache"))
    spec = RollSpec(frames_per_beat=2)
    src = read_rolls("bach_chorales", spec, max_files=4)
    assert len(src.splits["all"]) == 4 and all(r.sum() > 0 for r in src.splits["all"])
    assert list((tmp_path / "cache" / "music").glob("bach_chorales-*.npz"))
    again = read_rolls("bach_chorales", spec, max_files=4)                   # from the cache
    for a, b in zip(src.splits["all"], again.splits["all"]):
        np.testing.assert_array_equal(a, b)
    from grukit.train import fit
    run = fit("music", data="bach_chorales", out=tmp_path / "run", max_files=4, frames_per_beat=2,
              val_fraction=0.25, test_fraction=0.25, **TINY)
    assert run.evaluate()["grukit"]["pieces"] == 1


# ------------------------------------------------------------------ the inference entry points
def _models(P=88, output="bernoulli", n=2):
    from grukit.tasks.music import MusicTask
    from grukit.tasks.music_config import MusicConfig
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        cfg = MusicConfig(data="x", hidden_size=8, nade_hidden=4, output=output, backend="aten")
        out.append(MusicTask(cfg, {"input_size": P}).eval())
    return out


@pytest.mark.parametrize("output", ["bernoulli", "nade"])
def test_generate_batches_pieces_and_is_reproducible(output):
    """generate(): n pieces advanced by one batched GRU.step each frame; greedy pieces equal one piece alone,
    sampled ones repeat with the seed; a primer starts every piece; an ensemble samples too."""
    from grukit.tasks import music
    (m,) = _models(output=output, n=1)
    primer = _roll(5)
    rolls = music.generate([m], m.meta, 3, 7, temperature=0.0, seed=0, primer=primer)
    alone = music.generate([m], m.meta, 1, 7, temperature=0.0, seed=0, primer=primer)[0]
    assert len(rolls) == 3 and all(r.shape == (12, 88) and r.dtype == np.uint8 for r in rolls)
    for r in rolls:
        np.testing.assert_array_equal(r, alone)
        np.testing.assert_array_equal(r[:5], primer)
    a = music.generate([m], m.meta, 2, 20, temperature=1.0, seed=5)
    b = music.generate([m], m.meta, 2, 20, temperature=1.0, seed=5)
    assert all((x == y).all() for x, y in zip(a, b)) and (a[0] != a[1]).any()
    np.testing.assert_array_equal(m.sample(20, None, 1.0, 5), music.generate([m], m.meta, 1, 20, 1.0, 5)[0])
    pair = _models(output=output, n=2)
    assert music.generate(pair, m.meta, 2, 4, temperature=1.0, seed=1)[0].shape == (4, 88)
    with pytest.raises(ConfigError, match="temperature=-1"):
        music.generate([m], m.meta, 1, 3, temperature=-1)


def test_evaluation_averages_the_ensemble():
    """Music evaluation runs every ensemble member (tasks.base.infer): the frame NLL of a pair is the mean of
    the members' NLLs, a model paired with itself scores as itself."""
    from grukit.tasks import music
    rolls = [_roll(30, seed=1), _roll(18, seed=2), _roll(25, seed=3)]
    m1, m2 = _models()
    (n1, a1, p1), (n2, _, p2) = music._score([m1], rolls), music._score([m2], rolls)
    both, _, pb = music._score([m1, m2], rolls)
    np.testing.assert_allclose(both[:, 0], (n1[:, 0] + n2[:, 0]) / 2, **TOL["float32"])
    np.testing.assert_allclose(pb[0], (p1[0] + p2[0]) / 2, **TOL["float32"])
    same, acc, _ = music._score([m1, m1], rolls)
    np.testing.assert_allclose(same, n1, **TOL["float32"])
    np.testing.assert_array_equal(acc, a1)
    with torch.no_grad():                                                  # by hand, piece 0 through forward
        x = torch.from_numpy(np.vstack([np.zeros((1, 88)), rolls[0][:-1]])).float()[None]
        y = torch.from_numpy(rolls[0]).float()[None]
        (logits, _), _ = m1({"x": x, "y": y})
    assert math.isclose(n1[0, 0], float(frame_nll(logits, y).sum()), rel_tol=TOL["float32"]["rtol"])
    assert n1[0, 1] == 30


def test_shuffled_loader_depends_only_on_seed_and_epoch(midi_dir):
    """Music training batches come from the shared reproducible loader: a resumed run (a fresh loader set to
    epoch e) sees the batches of epoch e of the uninterrupted run; epochs differ; the split is in the meta."""
    from grukit.tasks import music
    from grukit.tasks.music_config import MusicConfig
    cfg = MusicConfig(data=str(midi_dir), quantize="time", fs=8.0, chunk=8, batch_size=3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, resumed = music.prepare(cfg), music.prepare(cfg)

    def epoch(loader, e):
        loader.sampler.set_epoch(e)
        return [b["y"] for b in loader]

    run = [epoch(first.train, e) for e in range(3)]
    again = epoch(resumed.train, 2)
    assert len(again) == len(run[2]) and all(torch.equal(a, b) for a, b in zip(again, run[2]))
    assert any(not torch.equal(a, b) for a, b in zip(run[0], run[1]))
    split = first.meta["split"]
    assert sorted(split["train"] + split["valid"] + split["test"]) == sorted(f"piece{i}.mid" for i in range(6))
    assert len(split["test"]) == first.meta["pieces"]["test"] >= 1


def test_validation_metrics_equal_evaluation():
    """The NLL and frame accuracy logged in validation (sums over frames, not means of batch means) equal the
    evaluation path's on the same pieces."""
    from grukit.data.music import eval_batches
    from grukit.tasks import music
    (m,) = _models(n=1)
    rolls = [_roll(30, seed=1), _roll(18, seed=2), _roll(25, seed=3)]
    nll, acc, _ = music._score([m], rolls)
    loader, _ = eval_batches(rolls, frames=40)                             # several batches
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for i, batch in enumerate(loader):
            m.validation_step(batch, i)
    got = m.val_metrics.compute()
    assert math.isclose(float(got["val_nll"]), nll[:, 0].sum() / nll[:, 1].sum(), rel_tol=TOL["float32"]["rtol"])
    assert math.isclose(float(got["val_acc"]), acc[:, 0].sum() / acc[:, 1].sum(), rel_tol=TOL["float32"]["rtol"])
