"""Where a B=1 step goes: the whole ``GRU(x)`` call, the compiled call alone and the read floor, per time step.

The engine bench's ``x_floor`` compares ``GRU(x)`` with the time to read ``W_hh`` once from cache
(:func:`grukit.bench.read_floor_us`). This script splits the call: ``call`` is ``GRU(x)`` (Python, checks and
dispatch included), ``compiled`` the compiled forward alone (``_cgru.Plan.run`` on the same input and threads),
``floor`` the read floor; peers alternate block by block and the medians over ``--rounds`` rounds are printed.

    python bench/floor_b1.py                       # H = I = 64 and H = 64, I = 40, T = 100, 2 threads
    python bench/floor_b1.py --hidden 128 --inputs 128 --rounds 9
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from grukit import bench
from grukit.nn.backends import fused_cpu, get


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[64])
    ap.add_argument("--inputs", type=int, nargs="+", default=[64, 40])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    c = fused_cpu.cgru()
    if c is None:
        print("the compiled kernels are not built here (cgru_status: numba): nothing to split", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    T = args.steps
    print(f"B=1, T={T}, {args.threads} threads, us per step (medians of {args.rounds} rounds)")
    print(f"{'H':>4} {'I':>4} {'call':>7} {'compiled':>9} {'floor':>7} {'call/floor':>11} {'compiled/floor':>15}")
    for H in args.hidden:
        for I in args.inputs:
            _, gru = bench._pair(I, H)
            x = torch.randn(T, 1, I)
            with torch.no_grad():
                gru(x)
                gru(x)                                     # the second call takes the fast path
            plan = get("fused_cpu").cache.peek(gru).parts["plan"]
            n = fused_cpu.compiled_threads(1, H, T, I)
            split = fused_cpu.unit_split(H)
            fns = {"call": lambda: gru(x),
                   "compiled": lambda: plan.run(x.data_ptr(), T, 1, 0, None, 0.0, n, n, split)}
            got: dict[str, list[float]] = {"call": [], "compiled": [], "floor": []}
            with torch.no_grad():
                for r in range(args.rounds):
                    order = list(fns) if r % 2 == 0 else list(fns)[::-1]
                    for k in order:
                        got[k].append(bench._blocks({k: fns[k]}, 21)[k] / T * 1e6)
                    bench._READ.pop(3 * H * H, None)
                    got["floor"].append(bench.read_floor_us(3 * H * H))
            m = {k: statistics.median(v) for k, v in got.items()}
            print(f"{H:>4} {I:>4} {m['call']:>7.3f} {m['compiled']:>9.3f} {m['floor']:>7.3f} "
                  f"{m['call'] / m['floor']:>11.2f} {m['compiled'] / m['floor']:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
