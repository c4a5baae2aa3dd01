"""The cost of the weight cache's staleness check: ``GRU(x)`` and ``GRU.step`` with the full rule (identity,
version and address, then one memcmp of the weights against the snapshot) against the identity/version check
alone (what ran before the byte comparison), alternating blocks in one process, medians; and the rule alone (``WeightCache.peek``: gathering the tensors,
the identity check and the memcmp) as a share of the call, the steadier number on a loaded machine.

    python bench/engine_cache.py                      # T=100, B=1, H=64 and a few neighbours
    python bench/engine_cache.py --hidden 64 --rounds 15
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from grukit.nn import GRU, backends
from grukit.nn.backends import weight_cache


def _blocks(fn, n: int, clock) -> float:
    t = clock()
    for _ in range(n):
        fn()
    return (clock() - t) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: this process's CPU time (steadier on a loaded machine); wall: perf_counter")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    full = weight_cache.Snapshot._compare
    key_only = lambda self, tensors, addrs, same: True              # noqa: E731  the bytes assumed unchanged
    print(f"T={args.steps}, B={args.batch}, {args.threads} threads, {args.clock} clock; us per call, medians of "
          f"{args.rounds} alternating rounds")
    print(f"{'H':>4} {'call':>8} {'key only':>9} {'full rule':>10} {'ratio':>6} {'rule alone':>11} {'share':>6}")
    for H in args.hidden:
        gru = GRU(H, H).eval()
        x = torch.randn(args.steps, args.batch, H)
        x1 = torch.randn(args.batch, H)
        calls = {"forward": lambda: gru(x), "step": lambda: gru.step(x1)}
        n = max(20, 20_000 // (args.steps * H))
        with torch.no_grad():
            for name, fn in calls.items():
                fn(), fn()                                             # build the packed weights, note fast paths
                got: dict[str, list[float]] = {"key": [], "full": []}
                for r in range(args.rounds):
                    for k in (("key", "full") if r % 2 == 0 else ("full", "key")):
                        weight_cache.Snapshot._compare = key_only if k == "key" else full
                        got[k].append(_blocks(fn, n if name == "forward" else 20 * n, clock) * 1e6)
                weight_cache.Snapshot._compare = full
                cache = backends.get("fused_cpu").cache
                rule = statistics.median(_blocks(lambda: cache.peek(gru), 200, clock) * 1e6
                                         for _ in range(args.rounds))
                a, b = statistics.median(got["key"]), statistics.median(got["full"])
                print(f"{H:>4} {name:>8} {a:>9.2f} {b:>10.2f} {b / a:>6.3f} {rule:>11.2f} {rule / a:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
