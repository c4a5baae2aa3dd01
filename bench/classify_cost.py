"""Training cost of the default classifier on a 500-series, length-500 univariate set (issue 20's target: under
3 minutes on the 2-core machine), and where a training step's time goes.

The set is synthetic (4 classes: sines of 2-5 cycles with random phase plus noise of 0.8, 500 train and 500 test
series of 500 steps), so the timing needs no download. Prints the schedule that ``schedule=auto`` chose
(500 series: a stratified validation split, early stopping), wall and CPU seconds of ``grukit.train.fit`` and
the test accuracy; ``--profile`` adds the top functions of a plain forward/backward/AdamW loop over the same
batches (what a step costs without Lightning).

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/classify_cost.py [--n 500] [--length 500] [--profile]
        [--set conv_branch=fcn]      # a ClassifyConfig override (repeatable), e.g. to time another default
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic(n: int, length: int, seed: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, length), y (n,) as strings): class k is a sine of 2 + k cycles with a random phase, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    t = np.linspace(0, 1, length)
    X = np.stack([np.sin(2 * np.pi * (2 + k) * t + rng.uniform(0, 2 * np.pi)) + 0.8 * rng.standard_normal(length)
                  for k in y])                                                  # (n, length)
    return X.astype(np.float32), y.astype(str)


def write_set(folder: Path, n: int, length: int) -> tuple[str, str]:
    paths = []
    for part, seed in (("TRAIN", 0), ("TEST", 1)):
        X, y = synthetic(n, length, seed)
        path = folder / f"synthetic_{part}.npz"
        np.savez(path, X=X, y=y)
        paths.append(str(path))
    return paths[0], paths[1]


def profile_steps(train: str, steps: int = 40) -> None:
    import torch

    from grukit.config import ClassifyConfig
    from grukit.tasks import classify
    cfg = ClassifyConfig(data=train, progress=False)
    prep = classify.prepare(cfg)
    model = classify.ClassifyTask(cfg, prep.meta)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    batches = list(prep.train)

    def step(batch):
        inputs, y = model.batch_to_inputs(batch)
        logits, _ = model(inputs)
        loss = model.loss(logits, y, inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for b in batches[:3]:
        step(b)                                                                 # warm-up (kernel compilation)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(steps):
        step(batches[i % len(batches)])
    prof.disable()
    print(f"plain loop: {1000 * (time.perf_counter() - t0) / steps:.1f} ms per step (profiled), batch "
          f"{tuple(batches[0]['x'].shape)}, pool stride {prep.meta['pool_stride']}, patch {prep.meta['patch_stride']}")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="training (and test) series")
    ap.add_argument("--length", type=int, default=500, help="steps per series")
    ap.add_argument("--profile", action="store_true", help="also profile a plain training loop")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a ClassifyConfig override for the timed fit (repeatable)")
    args = ap.parse_args(argv)
    overrides = dict(s.split("=", 1) for s in args.set)
    import torch

    from grukit.train import fit
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="grukit_cost_"))
    train, test = write_set(folder, args.n, args.length)
    if args.profile:
        profile_steps(train)
    t0, c0 = time.perf_counter(), time.process_time()
    run = fit("classify", data=train, test_data=test, out=folder / "run", progress=False, evaluate=False,
              baselines=(), **overrides)                                 # timing grukit only
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = run.evaluate()["grukit"]["accuracy"]
    s = run.meta["schedule"]
    extra = "".join(f" {o}" for o in args.set)
    print(f"{args.n} series x {args.length} steps{extra}: fit {wall:.1f} s wall, {cpu:.1f} s CPU (train_seconds "
          f"{run.info.get('train_seconds')}); schedule: {s['rule']}; epochs <= {s['max_epochs']} of "
          f"{s['batches_per_epoch']} batches, {s['ensemble']} model(s); test accuracy {acc:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
