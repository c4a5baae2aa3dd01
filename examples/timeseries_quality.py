"""Quality check of the time-series tasks on built-in data (not a timed test; a few minutes per data set).

    python examples/timeseries_quality.py                 # all four
    python examples/timeseries_quality.py airline sunspots lynx nile   # the forecasting ones

Targets (issues 3 and 18): forecasting MASE below seasonal naive and the strong baselines (automatic ETS,
Theta, ARIMA by AICc, see grukit.tasks.baselines) on airline (last 24 months held out), sunspots (last 22
years, two rolling 11-year origins), lynx and nile (last 20 years, two 10-year origins); JapaneseVowels official test split accuracy >= 0.98;
anomaly detection on UCR InternalBleeding16 (aeon's kdd_tsad_135): F1, point-adjusted F1, ROC-AUC and the UCR
hit beside a z-score baseline, threshold = 99.9th percentile of the training scores.
Each run lands in runs/quality/<name> (numbered when taken); results also go to runs/quality/results.json.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from grukit.cli import QUICKSTART, print_table
from grukit.train import fit

torch.set_num_threads(int(os.environ.get("GRUKIT_THREADS", "2")))   # GRUKIT_THREADS=1 beside other jobs

SETUPS = {
    "airline": ("forecast", dict(QUICKSTART, ensemble=3)),
    "sunspots": ("forecast", dict(data="sunspots", lookback=33, horizon=11, backtests=2, season_length=11,
                                  transform="sqrt", window_norm=False, val_fraction=0.1, hidden_size=32,
                                  max_epochs=150, patience=30, ensemble=3)),
    "lynx": ("forecast", dict(data="lynx", lookback=30, horizon=10, backtests=2, season_length=10,
                              val_fraction=0.1, hidden_size=32, max_epochs=150, patience=30, ensemble=3)),
    "nile": ("forecast", dict(data="nile", lookback=20, horizon=10, backtests=2, val_fraction=0.1,
                              hidden_size=32, max_epochs=150, patience=30, ensemble=3)),
    # all 270 training sequences, a fixed cosine schedule, no early stopping (a 10% split left 27 sequences)
    "japanese_vowels": ("classify", dict(data="japanese_vowels", bidirectional=True, hidden_size=128,
                                         pooling="mean", head_dropout=0.2, label_smoothing=0.1, val_fraction=0.0,
                                         lr_schedule="cosine", max_epochs=60, patience=0, lr=3e-3,
                                         ensemble=3)),
    "kdd_tsad_135": ("autoencoder", dict(data="kdd_tsad_135", window=64, stride=2, hidden_size=64,
                                         latent_size=16, max_epochs=30, patience=8)),
}


def main(names: list[str]) -> None:
    out = Path("runs/quality")
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in names or list(SETUPS):
        task, cfg = SETUPS[name]
        t0 = time.time()
        run_dir = out / name
        i = 1
        while run_dir.exists():
            i += 1
            run_dir = out / f"{name}-{i}"
        run = fit(task, out=run_dir, progress=False, **{"threads": 0, **cfg})   # GRUKIT_THREADS's count
        metrics = json.loads((run.path / "metrics.json").read_text())
        results[name] = {"metrics": metrics, "seconds": round(time.time() - t0, 1), "run": str(run.path)}
        print_table(metrics, title=f"{name} ({task}, {results[name]['seconds']} s)")
        out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Quality check of the time-series tasks on built-in data (see the "
                                 "module docstring)")
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"data sets (default: all): {', '.join(SETUPS)}")
    names = ap.parse_args().names
    if set(names) - set(SETUPS):
        ap.error(f"unknown data set(s) {sorted(set(names) - set(SETUPS))}; expected {', '.join(SETUPS)}")
    main(names)
