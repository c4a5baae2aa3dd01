"""Engine benchmark, full grid: grukit's GRU against torch.nn.GRU, torch.nn.GRUCell and onnxruntime.

Every peer runs in this process on the same inputs and weights; outputs are checked to agree first, then each
peer is timed in its own block of back-to-back calls and the tables report medians and speed-ups (x_torch,
x_ort > 1 means grukit is faster). ``grukit bench`` runs the short version of the same code
(:func:`grukit.bench.run`).

    python bench/engine.py                        # full grid: inference, streaming, training
    python bench/engine.py --short                # the cells `grukit bench` runs
    python bench/engine.py --sections inference --repeats 31 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time

from grukit.bench import Settings, run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the few cells of `grukit bench`")
    ap.add_argument("--sections", nargs="+", default=["inference", "streaming", "training"],
                    choices=["inference", "streaming", "training"])
    ap.add_argument("--threads", type=int, default=2, help="torch, onnxruntime and numba threads (default 2)")
    ap.add_argument("--repeats", type=int, default=21, help="timed repeats per cell (medians reported)")
    ap.add_argument("--steps", type=int, default=100, help="time steps T of a sequence")
    args = ap.parse_args(argv)
    t0 = time.time()
    s = Settings(threads=args.threads, T=args.steps, repeats=args.repeats)
    print(run(short=args.short, sections=tuple(args.sections), settings=s))
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
