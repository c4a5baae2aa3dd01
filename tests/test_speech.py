"""Speech task: CTC decoding on hand-made posteriors, causal front end and streaming equal to whole-utterance
transcription, end to end through the CLI and Python on a tiny synthetic FSDD-style folder."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from grukit.cli import main
from grukit.data import audio
from grukit.errors import ConfigError, DataError
from grukit.tasks import speech
from grukit.tasks.speech_config import SpeechConfig

RATE = 8000


def _lp(rows):
    """Hand-made posterior: rows of probabilities (T, S+1) -> log-probabilities."""
    return torch.log(torch.tensor(rows, dtype=torch.float64))


# ---------------------------------------------------------------- decoding
def test_greedy_merges_repeats_and_drops_blanks():
    #        blank   a     b
    post = [[0.1, 0.8, 0.1],     # a
            [0.1, 0.8, 0.1],     # a (repeat, merged)
            [0.8, 0.1, 0.1],     # blank
            [0.1, 0.8, 0.1],     # a again: a new symbol after a blank
            [0.1, 0.1, 0.8],     # b
            [0.9, 0.05, 0.05]]   # blank
    assert speech.greedy_decode(_lp(post)) == [1, 1, 2]
    assert speech.beam_search(_lp(post), beam=4) == [1, 1, 2]


def test_beam_search_sums_alignments_where_greedy_takes_one_path():
    # Best single path is blank,blank (0.36) but "a" has 0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64.
    post = [[0.6, 0.4], [0.6, 0.4]]
    assert speech.greedy_decode(_lp(post)) == []
    assert speech.beam_search(_lp(post), beam=3) == [1]
    # "aa" needs a blank between: with two frames the label sequence a,a is impossible, a is chosen.
    post2 = [[0.05, 0.95], [0.05, 0.95]]
    assert speech.beam_search(_lp(post2), beam=3) == [1]


def test_beam_search_probability_of_prefix_matches_brute_force():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=4)                     # T=4, blank + 2 symbols
    # brute force: sum path probabilities per collapsed label sequence
    import itertools
    totals: dict[tuple, float] = {}
    for path in itertools.product(range(3), repeat=4):
        prob = math.prod(p[t, s] for t, s in enumerate(path))
        collapsed = tuple(s for i, s in enumerate(path) if s != 0 and (i == 0 or path[i - 1] != s))
        totals[collapsed] = totals.get(collapsed, 0.0) + prob
    best = max(totals, key=totals.get)
    assert tuple(speech.beam_search(torch.log(torch.tensor(p)), beam=50, prune=-1e9)) == best


def test_vocabulary_chars_and_words():
    """The one vocabulary class (grukit.data.text.Vocab) as CTC output symbols: id 0 the blank, cleaned text,
    unknown symbols dropped, and a round trip through a run's meta (symbols, units)."""
    from grukit.data.text import BLANK, Vocab
    v = Vocab.of_labels(["Seven three", "nine  one"], "char")
    assert v.text_of(v.labels("Seven  THREE")) == "seven three" and v.itos[0] == BLANK
    assert " " in v.symbols and 0 not in v.labels("nine") and v.labels("xyz") == []
    assert v.text_of([0, v.stoi["n"], 0, 99]) == "n"                          # blanks and unknown ids dropped
    w = Vocab.of_labels(["seven three", "nine"], "word")
    assert w.symbols == ["nine", "seven", "three"] and w.text_of(w.labels("three nine zero")) == "three nine"
    assert Vocab.from_symbols(w.symbols, "word") == w


# ---------------------------------------------------------------- front end and streaming
@pytest.mark.parametrize("stride,layers,chunks", [(2, 2, [1, 2, 3, 7, 1, 11]), (3, 1, [5, 5, 5, 10]),
                                                   (1, 3, [4, 21])])
def test_causal_conv_streams_like_forward(stride, layers, chunks):
    conv = speech.CausalConv(6, 8, layers, stride, kernel=4).eval()
    x = torch.randn(2, sum(chunks), 6)
    whole = conv(x)                                                         # (B, T', C)
    assert whole.shape[1] == math.ceil(x.shape[1] / stride)
    state, parts, t = conv.initial_state(2, x), [], 0
    for n in chunks:
        y, state = conv.stream(x[:, t: t + n], state)
        parts.append(y)
        t += n
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)
    # output frame j never depends on input frames after j*stride (causal)
    x2 = x.clone()
    x2[:, 6:] = 0
    torch.testing.assert_close(conv(x2)[:, : 6 // stride + (1 if 6 % stride else 0)],
                               whole[:, : 6 // stride + (1 if 6 % stride else 0)])


@pytest.mark.parametrize("stride,layers,kernel", [(2, 2, 5), (3, 1, 4), (1, 3, 4), (2, 3, 3)])
def test_causal_conv_streams_padded_like_each_stream_alone(stride, layers, kernel):
    """stream_padded (one strided conv per layer for right-padded streams of any frame count and stride
    phase, zero-frame streams included) gives each stream the outputs and state its own stream() call gives."""
    conv = speech.CausalConv(6, 8, layers, stride, kernel=kernel).eval()
    g = torch.Generator().manual_seed(stride * 10 + layers)
    xs = [torch.randn(40, 6, generator=g) for _ in range(5)]
    batched = conv.batch_state(len(xs), xs[0][None])
    alone = [conv.initial_state(1, xs[0][None]) for _ in xs]
    pos = [0] * len(xs)
    sizes = [[0, 1, 2, 3, 5, 7][int(k)] for k in torch.randint(0, 6, (8, len(xs)), generator=g).flatten()]
    phases = set()
    for tick in range(9):
        ns = ([1, 0, 0, 1, 0] if tick == 2 else [4, 4, 4, 4, 4] if tick == 8 else
              sizes[tick * len(xs):(tick + 1) * len(xs)])                    # no output at all; all equal
        chunks = [x[p:p + n] for x, p, n in zip(xs, pos, ns)]
        padded = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True)
        phases.add(tuple(int(v) % stride for v in batched[0][1]))
        with torch.no_grad():
            y, m, batched = conv.stream_padded(padded, torch.tensor(ns), batched)
            for i, c in enumerate(chunks):
                ref, alone[i] = conv.stream(c[None], alone[i])
                assert int(m[i]) == ref.shape[1]
                torch.testing.assert_close(y[i, :int(m[i])], ref[0], atol=1e-5, rtol=1e-5)
                assert [int(n[i]) for _, n in batched] == [n for _, n in alone[i]]
                for (a, _), (b, _) in zip(batched, alone[i]):
                    torch.testing.assert_close(a[i:i + 1], b)
        pos = [p + n for p, n in zip(pos, ns)]
    assert sum(pos) > 40
    assert stride == 1 or any(len(set(p)) > 1 for p in phases)                 # phases mixed in one call


def _model(bidirectional=False, stride=2, units="char", symbols=tuple("abcdefghijklmnopqrstuvwxyz ")):
    spec = audio.FeatureSpec(rate=RATE, n_mels=20)
    cfg = SpeechConfig(hidden_size=24, num_layers=2, conv_channels=16, conv_layers=2, conv_stride=stride,
                       bidirectional=bidirectional, backend="aten")
    meta = {"input_size": spec.size, "features": spec.to_dict(), "feature_mean": [-40.0] * 20,
            "feature_std": [15.0] * 20, "symbols": list(symbols), "units": units}
    torch.manual_seed(1)
    m = speech.SpeechTask(cfg, meta).eval()
    with torch.no_grad():                                     # a peaky head, so transcripts are not empty
        m.head.proj.weight.mul_(8.0)
    return m


def _signal(seconds=1.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f = 200 + 600 * np.abs(np.sin(2 * np.pi * 1.3 * t))
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f) / RATE) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("chunk_ms", [10, 64, 250])
def test_streaming_equals_whole_utterance(chunk_ms):
    m = _model()
    x = _signal()
    feats = audio.normalise([audio.features(x, audio.FeatureSpec.from_dict(m.meta["features"]))], "global",
                            m.meta["feature_mean"], m.meta["feature_std"])
    whole_lp = speech._log_probs(m, feats)[0]                               # (T', S+1)
    whole_text = m.vocab.decode(speech.greedy_decode(whole_lp))
    s = speech.Streamer(m, "greedy")
    step = int(RATE * chunk_ms / 1000)
    partials = [s.push(x[i: i + step]) for i in range(0, len(x), step)]
    text = s.finish()
    torch.testing.assert_close(s.log_probs(), whole_lp, atol=1e-4, rtol=1e-4)
    assert text == whole_text and len(text) > 0
    assert all(text.startswith(p) for p in partials)                      # partials only grow


def test_streaming_refuses_bidirectional_and_utterance_norm():
    with pytest.raises(ConfigError, match="streaming needs a unidirectional model"):
        speech.Streamer(_model(bidirectional=True))
    m = _model()
    m.config = m.config.replace(normalize="utterance")
    with pytest.raises(ConfigError, match="normalize=global or none"):
        speech.Streamer(m)


def test_ctc_loss_and_lengths():
    m = _model().train()
    x = torch.randn(3, 41, 20)
    batch = {"x": x, "lengths": torch.tensor([41, 30, 9]), "y": torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]]),
             "target_lengths": torch.tensor([3, 2, 1])}
    inputs, y = m.batch_to_inputs(batch)
    lp, _ = m(inputs)
    assert lp.shape == (3, 21, 28) and inputs["out_lengths"].tolist() == [21, 15, 5]
    loss = m.loss(lp, y, inputs)
    loss.backward()
    assert torch.isfinite(loss) and m.head.proj.weight.grad is not None


# ---------------------------------------------------------------- end to end (synthetic FSDD-style folder)
def _folder(root):
    """3 'digits' as distinct chirps, 2 speakers, indices 0-6 (0-4 are test)."""
    root.mkdir()
    for s, spk in enumerate(("ann", "bob")):
        for d in range(3):
            for i in range(7):
                t = np.arange(int((0.18 + 0.01 * i) * RATE)) / RATE
                f0 = 300 + 400 * d + 30 * s
                x = 0.3 * np.sin(2 * np.pi * (f0 + 500 * t) * t)
                sf.write(str(root / f"{d}_{spk}_{i}.wav"), x.astype(np.float32), RATE, subtype="PCM_16")
    return root


TINY = ["--hidden-size", "16", "--num-layers", "1", "--conv-channels", "8", "--n-train-utterances", "24",
        "--n-test-utterances", "4", "--max-epochs", "1", "--batch-size", "8", "--no-progress", "--backend", "aten"]


def test_speech_and_classify_end_to_end_cli(tmp_path, capsys):
    data = _folder(tmp_path / "rec")
    out = tmp_path / "run"
    assert main(["train", "speech", "--data", str(data), "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"grukit_greedy", "grukit_beam"} and metrics["grukit_greedy"]["n"] == 4.0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["features"]["rate"] == RATE and set(meta["symbols"]) <= set("zerotwn ")
    # a built test utterance as a wav file, transcribed whole and streamed
    utt = audio.concat_utterances(audio.read_labelled(str(data), "test")[0], 1, RATE, seed=5)[0]
    wav = audio.write_wav(tmp_path / "utt.wav", utt.samples, RATE)
    capsys.readouterr()
    assert main(["transcribe", str(out), str(wav)]) == 0
    whole = capsys.readouterr().out.strip().split("\t")
    assert main(["transcribe", str(out), str(wav), "--stream", "--chunk-ms", "50"]) == 0
    streamed = capsys.readouterr()
    assert streamed.out.strip().split("\t") == whole and "real-time factor" in streamed.err
    # Python API: same transcript
    res = speech.transcribe_files(out, [wav], stream=True)
    assert res[0]["text"] == whole[1] and res[0]["rtf"] > 0
    assert main(["predict", str(out), "--data", str(wav)]) == 0
    assert main(["transcribe", str(out), str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav: audio file not found" in capsys.readouterr().err
    # classification fed audio features straight from the folder (official split: indices 0-4 test)
    cout = tmp_path / "cls"
    assert main(["train", "classify", "--data", str(data), "--out", str(cout), "--hidden-size", "8",
                 "--max-epochs", "1", "--no-progress", "--backend", "aten"]) == 0
    cm = json.loads((cout / "metrics.json").read_text())
    assert cm["grukit"]["n"] == 2 * 3 * 5
    assert main(["transcribe", str(cout), str(wav)]) == 2                   # not a speech run
    assert "transcribe needs a speech run" in capsys.readouterr().err


def test_speech_from_manifests_python_api(tmp_path):
    from grukit.train import fit
    data = _folder(tmp_path / "rec")
    rows = {}
    for split, seed in (("train", 1), ("test", 2)):
        utts = audio.concat_utterances(audio.read_labelled(str(data), split)[0], 12 if split == "train" else 3,
                                       RATE, min_words=2, max_words=3, seed=seed)
        lines = ["path\ttranscript"]
        for i, u in enumerate(utts):
            audio.write_wav(tmp_path / "clips" / f"{split}{i}.wav", u.samples, RATE)
            lines.append(f"clips/{split}{i}.wav\t{u.text}")
        (tmp_path / f"{split}.tsv").write_text("\n".join(lines) + "\n")
        rows[split] = utts
    run = fit("speech", data=str(tmp_path / "train.tsv"), test_data=str(tmp_path / "test.tsv"),
              out=tmp_path / "run", units="word", bidirectional=True, decoder="beam", hidden_size=12,
              num_layers=1, conv_channels=0, max_epochs=1, batch_size=4, progress=False, backend="aten")
    assert run.meta["symbols"] == ["one", "two", "zero"]
    m = run.evaluate()
    assert m["grukit_beam"]["n"] == 3.0 and 0 <= m["grukit_greedy"]["CER"]
    [csv] = run.predict(str(tmp_path / "test.tsv"), out=tmp_path / "pred.csv")
    assert csv.read_text().splitlines()[0] == "path,transcript,reference"
    with pytest.raises(ConfigError, match="unidirectional"):
        speech.transcribe_files(run, [tmp_path / "clips" / "test0.wav"], stream=True)
    assert isinstance(speech.transcribe_files(run, [tmp_path / "clips" / "test0.wav"])[0]["text"], str)


# ---------------------------------------------------------------- the inference entry point
def test_transcribe_waves_batches_resamples_and_averages_ensembles():
    """transcribe(models, meta, waves, rate): waves of different lengths in one call equal each alone; a wave
    at twice the model's rate is resampled first; an ensemble decodes the log of its members' mean posterior."""
    m = _model()
    waves = [_signal(1.3, 0), _signal(0.7, 1), _signal(1.0, 2)]
    together = speech.transcribe([m], m.meta, waves, RATE)
    assert together == [speech.transcribe([m], m.meta, [w], RATE)[0] for w in waves]
    assert any(together)
    spec = audio.FeatureSpec.from_dict(m.meta["features"])
    feats = audio.normalise([audio.features(waves[0], spec)], "global", m.meta["feature_mean"],
                            m.meta["feature_std"])
    with torch.no_grad():
        lp, _ = m({"x": torch.from_numpy(feats[0])[None]})                   # (1, T', S+1) by hand
    assert together[0] == m.vocab.decode(speech.greedy_decode(lp[0]))
    torch.testing.assert_close(speech._log_probs([m], feats)[0], lp[0], atol=1e-6, rtol=1e-6)
    up = audio.resample_to(waves[0], RATE, 2 * RATE)
    assert speech.transcribe([m], m.meta, [up], 2 * RATE)[0] == speech.transcribe([m], m.meta,
                                                                                  [audio.resample_to(up, 2 * RATE, RATE)],
                                                                                  RATE)[0]
    other = _model()
    with torch.no_grad():                                                    # a second, different member
        other.head.proj.weight.add_(torch.randn(other.head.proj.weight.shape, generator=torch.Generator().manual_seed(5)))
    assert not torch.allclose(speech._log_probs([other], feats)[0], lp[0], atol=1e-2)
    pair = speech._log_probs([m, other], feats)[0]
    ref = torch.logsumexp(torch.stack([speech._log_probs([m], feats)[0], speech._log_probs([other], feats)[0]]),
                          0) - math.log(2)
    torch.testing.assert_close(pair, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(DataError, match="wave 1: expected a non-empty 1-D array"):
        speech.transcribe([m], m.meta, [waves[0], np.zeros((0,), np.float32)], RATE)
