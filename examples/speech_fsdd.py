"""Speech quality on the Free Spoken Digit Dataset (FSDD): digit classification and CTC digit strings.

    python examples/speech_fsdd.py --data ../shared/data/fsdd/recordings --out runs/speech_fsdd

Stages (``--stages ctc,classify,speaker,speaker_cmvn``):

* ``classify``: ``grukit train classify`` on the audio folder (log-mel frames, bidirectional GRU), official
  split: recordings 0-4 of every speaker and digit are the test set. Target: accuracy >= 98 %.
* ``speaker``: the speaker-independent split, trained on five speakers, tested on the sixth
  (``DIR?test_speaker=NAME``).
* ``speaker_cmvn``: the same with per-utterance mean/variance normalisation (``DIR?norm=utterance``).
* ``ctc``: ``grukit train speech``: utterances of 3-7 digits of one speaker concatenated with random silences
  (training strings from training recordings only, test strings only from test recordings), a causal conv
  front end, a unidirectional GRU and character CTC. Reports greedy/beam WER and CER, then streams the test
  utterances through ``Streamer`` (chunks of 100 ms, ``GRU.step``) for the streaming WER and real-time factor.
  Target: WER <= 5 %.

Results go to ``OUT/summary.json``. Not a timed test: it trains real models (about 5-10 minutes for the
classification stages and 15-20 for CTC on two busy CPU cores).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def classify(data: str, out: Path, name: str, epochs: int) -> dict:
    from grukit.train import fit
    t0 = time.time()
    run = fit("classify", data=data, out=out / name, bidirectional=True, hidden_size=96, pooling="mean",
              head_dropout=0.2, max_epochs=epochs, patience=8, lr=3e-3, batch_size=32, val_fraction=0.1,
              progress=False)
    metrics = json.loads((run.path / "metrics.json").read_text())
    return {"accuracy": metrics["grukit"]["accuracy"], "macro_F1": metrics["grukit"]["macro_F1"],
            "n_test": metrics["grukit"]["n"], "seconds": round(time.time() - t0, 1), "run": str(run.path)}


def ctc(data: str, out: Path, epochs: int, n_stream: int, **overrides) -> dict:
    import numpy as np
    from grukit.train import fit
    from grukit.data.text import Vocab
    from grukit.tasks import speech
    t0 = time.time()
    options = dict(units="char", bidirectional=False, conv_channels=128, conv_layers=2, conv_stride=3,
                   hidden_size=128, num_layers=2, n_train_utterances=2400, n_test_utterances=500,
                   max_epochs=epochs, patience=epochs, lr=3e-3, lr_schedule="cosine", batch_size=32,
                   progress=False)
    if (out / "ctc" / "metrics.json").is_file():                 # trained before: reuse, re-measure streaming
        from grukit.runs import Run
        run = Run(out / "ctc")
    else:
        run = fit("speech", data=data, out=out / "ctc", **{**options, **overrides})
    train_s = time.time() - t0
    metrics = json.loads((run.path / "metrics.json").read_text())
    result = {"greedy": metrics["grukit_greedy"], "beam": metrics["grukit_beam"],
              "train_seconds": round(train_s, 1), "epochs": epochs, "run": str(run.path)}
    if run.config.bidirectional:                                # needs the whole utterance: no streaming
        return result
    # ---- streaming: the test utterances read in 100 ms chunks, frame by frame through GRU.step
    model = run.models()[0]
    utts, _, rate = speech.utterances(run.config, "test", rate=run.meta["features"]["rate"])
    utts = utts[:n_stream]
    hyps, proc, dur, same = [], 0.0, 0.0, 0
    whole = speech.transcribe([model], run.meta, [u.samples for u in utts], rate, decoder="greedy")
    speech.Streamer(model, "greedy").push(np.zeros(rate // 5, np.float32))   # warm-up: kernels load first
    for u, w in zip(utts, whole):
        s = speech.Streamer(model, "greedy")
        step = int(rate * 0.1)
        t = time.perf_counter()
        for i in range(0, len(u.samples), step):
            s.push(u.samples[i: i + step])
        hyps.append(s.finish())
        proc += time.perf_counter() - t
        dur += len(u.samples) / rate
        same += hyps[-1] == w
    stream = speech.error_rates(hyps, [Vocab.clean(u.text) for u in utts])
    stream.update(rtf=proc / dur, audio_seconds=round(dur, 1), equal_to_whole_utterance=same / len(utts))
    # ---- a few test utterances written as wav files, for `grukit transcribe`
    from grukit.data.audio import write_wav
    wavs = [str(write_wav(out / "ctc_examples" / f"test_{i}.wav", u.samples, rate)) for i, u in enumerate(utts[:3])]
    (out / "ctc_examples" / "transcripts.txt").write_text(
        "\n".join(f"{Path(w).name}\t{u.text}" for w, u in zip(wavs, utts)) + "\n")
    return dict(result, streaming=stream, example_wavs=wavs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/fsdd/recordings"))
    ap.add_argument("--out", default="runs/speech_fsdd")
    ap.add_argument("--stages", default="ctc,classify,speaker,speaker_cmvn")
    ap.add_argument("--test-speaker", default="theo")
    ap.add_argument("--classify-epochs", type=int, default=15)
    ap.add_argument("--ctc-epochs", type=int, default=24)
    ap.add_argument("--stream-utterances", type=int, default=100)
    ap.add_argument("--units", default="char", help="CTC output units: char or word")
    ap.add_argument("--ctc-batch-size", type=int, default=16)
    ap.add_argument("--bidirectional", action="store_true", help="CTC model: bidirectional GRU (no streaming)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy "
                    "machine: small GRU ops lose more to thread hand-offs than they gain)")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    stages = a.stages.split(",")

    def save():
        summary_file.write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2), flush=True)

    if "ctc" in stages:
        summary[f"ctc_digit_strings_{a.units}{'_bidirectional' if a.bidirectional else ''}"] = ctc(a.data, out, a.ctc_epochs, a.stream_utterances,
                                                       units=a.units, batch_size=a.ctc_batch_size,
                                                       bidirectional=a.bidirectional)
        save()
    if "classify" in stages:
        summary["classify_official_split"] = classify(a.data, out, "classify_official", a.classify_epochs)
        save()
    if "speaker" in stages:
        summary[f"classify_speaker_independent_{a.test_speaker}"] = classify(
            f"{a.data}?test_speaker={a.test_speaker}", out, f"classify_speaker_{a.test_speaker}",
            a.classify_epochs)
        save()
    if "speaker_cmvn" in stages:                        # per-utterance mean/variance normalisation first
        summary[f"classify_speaker_independent_{a.test_speaker}_cmvn"] = classify(
            f"{a.data}?test_speaker={a.test_speaker}&norm=utterance", out,
            f"classify_speaker_{a.test_speaker}_cmvn", a.classify_epochs)
        save()


if __name__ == "__main__":
    main()
