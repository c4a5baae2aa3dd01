"""Polyphonic music quality check: train on the four Boulanger-Lewandowski sets and compare the test NLL per
time step with Chung et al. 2014, Table 2 (GRU and LSTM columns, ~20K parameters each).

Not a test: it takes about an hour on 2 CPU cores (a time budget per data set and output). Run::

    python examples/music_quality.py --data-dir ../shared/data/polyphonic_mat --out runs/music_quality

It trains, for each data set, a GRU with independent Bernoulli outputs (the model of the paper) and, unless
``--outputs bernoulli``, the same GRU with a NADE output over the notes of a frame (RNN-NADE), then prints one
table: our test NLL beside the paper's, frame accuracy, parameters, training time and epochs. Results are also
written to ``OUT/results.json`` and ``OUT/results.md`` after every run, so a partial run keeps what it did.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

FILES = {"jsb_chorales": "JSB_Chorales.mat", "nottingham": "Nottingham.mat", "musedata": "MuseData.mat",
         "piano_midi": "Piano_midi.mat"}

# per data set: options and the training budget in minutes (per output distribution)
SETTINGS = {
    "jsb_chorales": dict(minutes={"bernoulli": 3.0, "nade": 4.0}, hidden_size=128, chunk=0, batch_size=8,
                         lr=5e-3, head_dropout=0.3, input_dropout=0.1, patience=15),
    "nottingham": dict(minutes={"bernoulli": 5.0, "nade": 6.0}, hidden_size=128, chunk=100, batch_size=16,
                       lr=5e-3, head_dropout=0.2, input_dropout=0.0, patience=8, limit_train_batches=1.0),
    "musedata": dict(minutes={"bernoulli": 5.0, "nade": 7.0}, hidden_size=128, chunk=100, batch_size=16,
                     lr=5e-3, head_dropout=0.2, input_dropout=0.0, patience=8, limit_train_batches=0.5),
    "piano_midi": dict(minutes={"bernoulli": 4.0, "nade": 6.0}, hidden_size=128, chunk=100, batch_size=16,
                       lr=5e-3, head_dropout=0.3, input_dropout=0.1, patience=10),
}


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("GRUKIT_DATA_MAT", str(here.parent / "shared" / "data" /
                                                                          "polyphonic_mat")))
    ap.add_argument("--out", default="runs/music_quality")
    ap.add_argument("--sets", default=",".join(FILES), help="comma separated: " + ", ".join(FILES))
    ap.add_argument("--outputs", default="bernoulli,nade", help="bernoulli, nade or both (comma separated)")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every time budget")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--extend", type=float, default=0.0, help="then continue (resume) every run still above the "
                    "paper's GRU for this many more minutes")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from grukit.tasks.music import PAPER
    from grukit.train import fit

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else []
    done = {(r["set"], r["output"]) for r in results}
    for name in args.sets.split(","):
        path = Path(args.data_dir) / FILES[name]
        if not path.is_file():
            print(f"skip {name}: {path} not found")
            continue
        for output in args.outputs.split(","):
            if (name, output) in done:
                continue
            s = dict(SETTINGS[name])
            minutes = s.pop("minutes")[output] * args.budget_scale
            run_dir = out / f"{name}-{output}"
            t0 = time.time()
            print(f"== {name} / {output}: up to {minutes:.1f} min", flush=True)
            run = fit("music", data=str(path), out=run_dir, progress=False, output=output, max_minutes=minutes,
                      max_epochs=500, **s)
            m = json.loads((run.path / "metrics.json").read_text())["grukit"]
            epochs = _epochs(run.path / "metrics.csv")
            results.append({"set": name, "output": output, "nll": m["nll"], "accuracy": m["accuracy"],
                            "params": int(m["params"]), "train_minutes": run.info.get("train_seconds", 0) / 60,
                            "total_minutes": (time.time() - t0) / 60, "epochs": epochs,
                            "paper_gru": PAPER[name][0], "paper_lstm": PAPER[name][1],
                            "hidden_size": s["hidden_size"]})
            _save(out, results)
    if args.extend > 0:
        for r in results:
            if r["nll"] < r["paper_gru"] or r["set"] not in args.sets.split(",") or \
                    r["output"] not in args.outputs.split(","):
                continue
            print(f"== {r['set']} / {r['output']}: {r['nll']:.2f} >= {r['paper_gru']}, {args.extend:.1f} more min",
                  flush=True)
            t0 = time.time()
            run_dir = out / f"{r['set']}-{r['output']}"
            (run_dir / "model.safetensors").unlink(missing_ok=True)    # fit(resume=True) skips finished runs
            run = fit("music", out=run_dir, resume=True, progress=False,   # the budget counts all sessions
                      max_minutes=r["train_minutes"] + args.extend)
            m = json.loads((run.path / "metrics.json").read_text())["grukit"]
            r.update(nll=m["nll"], accuracy=m["accuracy"], epochs=_epochs(run.path / "metrics.csv"),
                     train_minutes=r["train_minutes"] + run.info.get("train_seconds", 0) / 60,
                     total_minutes=r["total_minutes"] + (time.time() - t0) / 60)
            _save(out, results)


def _save(out: Path, results: list[dict]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table(results))
    print(table(results), flush=True)


def _epochs(csv: Path) -> int:
    import pandas as pd
    if not csv.is_file():
        return 0
    df = pd.read_csv(csv)
    return int(df["epoch"].max()) + 1 if "epoch" in df else 0


def table(results: list[dict]) -> str:
    head = ("| data set | output | test NLL (ours) | Chung GRU | Chung LSTM | below GRU? | frame acc | params "
            "| train min | epochs |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = [f"| {r['set']} | {r['output']} | {r['nll']:.2f} | {r['paper_gru']:.2f} | {r['paper_lstm']:.2f} | "
            f"{'yes' if r['nll'] < r['paper_gru'] else 'no'} | {100 * r['accuracy']:.1f}% | {r['params'] / 1e3:.0f}K "
            f"| {r['train_minutes']:.1f} | {r['epochs']} |" for r in results]
    note = ("\nNLL: nats per time step (test set). Paper: Chung et al. 2014 Table 2, about 20K parameters per "
            "model; ours are larger (params column).\n")
    return head + "\n".join(rows) + "\n" + note


if __name__ == "__main__":
    main()
