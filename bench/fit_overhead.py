"""fit()'s overhead on a small model, side by side with a plain PyTorch loop over the same batches.

Steady-state time per epoch: (T(1 + N epochs) - T(1 epoch)) / N, for grukit.train.fit (Lightning Trainer,
checkpoints, logging, callbacks) and for a plain loop (forward, loss, backward, clip, AdamW step over the
same training batches, then a no-grad pass over the same validation batches). Fixed start-up: T(1 epoch) of
fit minus one steady epoch (config, prepare, run directory, Trainer construction, saving the weights,
metrics.csv and the loss plot). Runs alternate between the two so machine load hits both alike; medians.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/fit_overhead.py [--epochs 30] [--repeats 3] [--profile]

Measured 2026-12-06 on the shared 2-core machine under load ~12 (--epochs 30 --repeats 5 --legacy, one
process, alternating): plain 70.7 ms/epoch; fit 201.7 ms/epoch (2.85x) with the current Trainer options vs
250.9 ms/epoch (3.55x) with the old ones (log every step, bar refresh every batch); start-up 1.1-1.3 s.
Later (2026-12-06, night, --epochs 30 --repeats 3): plain 5.8-8.4 ms/epoch, fit 12.9-13.4 ms/epoch (1.6-2.2x),
start-up 0.14-0.17 s; with the rich progress bar 104 ms/epoch before grukit's bar stopped waiting ~70 ms per epoch
for Lightning's refresh thread (``grukit.callbacks.rich_progress_bar``), 21 ms/epoch after.
2026-12-07 (--epochs 10 --repeats 3, beside one other job): plain 5.3 ms/epoch, fit 12.8 ms/epoch (2.40x),
start-up 0.105 s as a tune trial trains (``after_fit=False``); a user's fit with the progress bar 12.4 ms/epoch,
start-up 0.550 s, which now includes ``after_fit`` (the forecast combination's choice: SES, damped and Theta on
airline's 13 validation windows, and the interval calibration).
2026-12-07, later (--epochs 30 --repeats 3, alone on an AVX-512 2-core machine): plain 8.4 ms/epoch, fit
15.2 ms/epoch (1.82x), start-up 0.128 s (progress off, as a tune trial trains); with the progress bar and
``after_fit`` 18.7 ms/epoch (2.23x), start-up 0.616 s.
What is left per epoch (--profile): the metrics.csv rewrite of AtomicCSVLogger.save (atomic, fsync, manifest)
after every logger call, best.ckpt writes on every improving epoch, and ``self.log`` in the task step.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch

CONFIG = dict(data="airline", max_epochs=1, patience=0)   # the forecast defaults otherwise (hidden 32, batch 16)
LOGGING = (50, 10)                                        # grukit.train's LOG_EVERY_N_STEPS, BAR_REFRESH_BATCHES


def time_fit(epochs: int, progress: bool, root: Path, legacy: bool = False) -> float:
    """One fit() call; ``legacy`` restores the per-step logging and per-batch bar refresh of before. Without
    the progress bar it trains as a ``grukit tune`` trial does (``after_fit=False``: the forecast combination's
    choice and the interval calibration are left to the best run); with it, as a user's ``fit`` does."""
    from grukit import train
    from grukit.train import fit
    train.LOG_EVERY_N_STEPS, train.BAR_REFRESH_BATCHES = (1, 1) if legacy else LOGGING
    out = Path(tempfile.mkdtemp(dir=root))
    t0 = time.perf_counter()
    fit("forecast", out=out / "run", evaluate=False, progress=progress, after_fit=progress,
        **{**CONFIG, "max_epochs": epochs})
    return time.perf_counter() - t0


def skip_last_checkpoint() -> None:
    """Make grukit.train's checkpoint IO drop last.ckpt writes (serialisation included); bench only."""
    from grukit import runs, train

    class Lazy:
        def __init__(self, checkpoint):
            self.checkpoint = checkpoint

    def write(path, data):
        if Path(path).name == "last.ckpt":
            return Path(path)
        return runs.atomic_write(path, runs.checkpoint_bytes(data.checkpoint) if isinstance(data, Lazy) else data)

    train.checkpoint_bytes, train.atomic_write = Lazy, write


def time_plain(epochs: int) -> float:
    import lightning as L
    from grukit.tasks import registry
    from grukit.train import resolve_config
    t0 = time.perf_counter()
    cfg = resolve_config("forecast", None, **{**CONFIG, "max_epochs": epochs})
    module = registry.get("forecast").load()
    L.seed_everything(0, verbose=False)
    prepared = module.prepare(cfg)
    model = module.Task(cfg, prepared.meta)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(epochs):
        model.train()
        for batch in prepared.train:
            inputs, target = model.batch_to_inputs(batch)
            out, _ = model(inputs)
            loss = model.loss(out, target, inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.gradient_clip_val)
            opt.step()
        model.eval()
        with torch.no_grad():
            for batch in prepared.val or []:
                inputs, target = model.batch_to_inputs(batch)
                out, _ = model(inputs)
                model.loss(out, target, inputs)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one 1-epoch and one N-epoch fit")
    ap.add_argument("--legacy", action="store_true", help="also time fit with the old Trainer logging options "
                    "(log every step, bar refresh every batch), alternating with the current ones")
    ap.add_argument("--skip-last-ckpt", action="store_true", help="estimate a last.ckpt throttle: fit skips "
                    "writing (and serialising) last.ckpt; best.ckpt is written as usual")
    args = ap.parse_args()
    if args.skip_last_ckpt:
        skip_last_checkpoint()
    global LOGGING
    from grukit import train
    LOGGING = (train.LOG_EVERY_N_STEPS, train.BAR_REFRESH_BATCHES)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="fit_overhead_"))
    n = args.epochs
    time_fit(2, False, root)                              # imports and first-call caches
    time_plain(2)
    if args.profile:
        for e in (1, 1 + n):
            prof = cProfile.Profile()
            prof.enable()
            time_fit(e, False, root)
            prof.disable()
            print(f"---- fit, {e} epoch(s), progress off: top cumulative")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    rows: dict[str, list[float]] = {k: [] for k in ("fit1", "fitN", "fit1_bar", "fitN_bar", "plain1", "plainN",
                                                    "old1", "oldN", "old1_bar", "oldN_bar")}
    for _ in range(args.repeats):
        if args.legacy:
            rows["old1"].append(time_fit(1, False, root, legacy=True))
            rows["oldN"].append(time_fit(1 + n, False, root, legacy=True))
            rows["old1_bar"].append(time_fit(1, True, root, legacy=True))
            rows["oldN_bar"].append(time_fit(1 + n, True, root, legacy=True))
        rows["plain1"].append(time_plain(1))
        rows["fit1"].append(time_fit(1, False, root))
        rows["plainN"].append(time_plain(1 + n))
        rows["fitN"].append(time_fit(1 + n, False, root))
        rows["fit1_bar"].append(time_fit(1, True, root))
        rows["fitN_bar"].append(time_fit(1 + n, True, root))
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    plain_epoch = (med["plainN"] - med["plain1"]) / n
    fit_epoch = (med["fitN"] - med["fit1"]) / n
    bar_epoch = (med["fitN_bar"] - med["fit1_bar"]) / n
    print(f"forecast on airline, default model, {n} epochs, medians of {args.repeats} (one torch thread)")
    print(f"  plain loop : {plain_epoch * 1e3:7.1f} ms/epoch")
    print(f"  fit        : {fit_epoch * 1e3:7.1f} ms/epoch  ({fit_epoch / plain_epoch:.2f}x plain)   "
          f"start-up {max(0.0, med['fit1'] - fit_epoch):.3f} s   (progress off, as grukit tune trains)")
    print(f"  fit + bar  : {bar_epoch * 1e3:7.1f} ms/epoch  ({bar_epoch / plain_epoch:.2f}x plain)   "
          f"start-up {max(0.0, med['fit1_bar'] - bar_epoch):.3f} s   (default: rich progress bar, after_fit)")
    if args.legacy:
        for key, what in (("", "progress off"), ("_bar", "rich progress bar")):
            e = (med[f"oldN{key}"] - med[f"old1{key}"]) / n
            print(f"  old options: {e * 1e3:7.1f} ms/epoch  ({e / plain_epoch:.2f}x plain)   start-up "
                  f"{max(0.0, med[f'old1{key}'] - e):.3f} s   ({what}; log every step, bar refresh every batch)")


if __name__ == "__main__":
    main()
