"""What the two language-model quality scripts share: their common options, and the measurement after training
(training and generation speed, a sample, the report written beside the run)."""
from __future__ import annotations

import argparse
import json
import time

import torch


def base_args(description: str, data: str, out: str, minutes: float) -> argparse.ArgumentParser:
    """The options of both scripts (each adds its model's)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", default=data)
    ap.add_argument("--out", default=out)
    ap.add_argument("--minutes", type=float, default=minutes, help="training wall-clock budget")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    return ap


def measure(run, prompt: str, length: int, wall: float, args) -> tuple[dict, str]:
    """(the report's common fields, a sample of ``length`` tokens at temperature 0.8 after ``prompt``)."""
    import pandas as pd

    from grukit.tasks.language import generate_text
    info = json.loads((run.path / "run.json").read_text())
    log = pd.read_csv(run.path / "metrics.csv")
    tok_s = log["train_tokens_per_s"].dropna()
    generate_text(run, prompt=prompt, length=5, seed=0)              # warm-up: the first step() call compiles
    t1 = time.time()
    sample = generate_text(run, prompt=prompt, length=length, temperature=0.8, seed=1)
    report = {"train_seconds": info.get("train_seconds"), "wall_seconds": round(wall, 1),
              "epochs": int(log["epoch"].max()) + 1,
              "train_tokens_per_s": round(float(tok_s.mean()), 1) if len(tok_s) else None,
              "generate_tokens_per_s": round(length / (time.time() - t1), 1), "eval": info.get("evaluation"),
              "threads": torch.get_num_threads(), "config": vars(args)}
    return report, sample


def publish(run, report: dict, sample: str) -> None:
    """Print the report and the sample; write the report as RUN/quality.json."""
    print(json.dumps(report, indent=2))
    print("---- sample (temperature 0.8) ----")
    print(sample)
    (run.path / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
