"""MaskedBatchNorm1d (training statistics over the valid steps only) against torch's fused BatchNorm1d, forward
and backward in training mode on one padded batch of variable-length series, one thread, medians.

    PYTHONPATH=. python bench/masked_batchnorm.py [--batch 16 --channels 32 --steps 200]

Measured 2026-12-07 on the 2-core machine (AVX-512): 1.6-1.9x torch's kernel (the two-pass form, mean then the
squared deviations, was 2.2-2.4x; a packed gather of the valid steps through torch's kernel 3.2x). The
convolutions around it dominate a branch's time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from grukit.tasks.conv import MaskedBatchNorm1d


def timed(fn, x, repeats: int = 7, calls: int = 50) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn().sum().backward()
            x.grad = None
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.channels, a.steps, requires_grad=True)
    lengths = torch.randint(a.steps // 10, a.steps + 1, (a.batch,))
    lengths[0] = a.steps
    m = (torch.arange(a.steps)[None] < lengths[:, None]).unsqueeze(1).float()     # (B, 1, T)
    ours, ref = MaskedBatchNorm1d(a.channels), torch.nn.BatchNorm1d(a.channels)
    t_ref, t_ours = [], []
    for _ in range(3):                                                              # alternate the two
        t_ref.append(timed(lambda: ref(x), x))
        t_ours.append(timed(lambda: ours(x, m), x))
    r, o = statistics.median(t_ref), statistics.median(t_ours)
    print(f"torch BatchNorm1d {r * 1e6:.0f} us, MaskedBatchNorm1d {o * 1e6:.0f} us (valid steps "
          f"{int(m.sum())} of {m.numel()}): ratio {o / r:.2f}x")


if __name__ == "__main__":
    main()
