"""Does the numba float32 inference path earn its place next to the compiled C kernels? Both run ``GRU(x)`` (no
grad, float32) in this process on the same module and input, alternating blocks, CPU time, medians; torch.nn.GRU (aten)
alongside, since it is what a plain GRU could run instead when the C extension is missing.

    python bench/numba_vs_c.py                       # B in 1, 8, 64; H in 64, 256; T=100; 1 thread
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from grukit.nn import GRU
from grukit.nn.backends import fused_cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    real = fused_cpu.cgru
    print(f"us per time step, T=100, {args.threads} thread(s), medians of {args.rounds} alternating rounds")
    print(f"{'B':>3} {'H':>4} {'C':>8} {'numba':>8} {'aten':>8} {'numba/C':>8} {'numba/aten':>10}")
    for B in (1, 8, 64):
        for H in (64, 256):
            torch.manual_seed(0)
            g = GRU(H, H).eval()
            ref = torch.nn.GRU(H, H).eval()
            ref.load_state_dict(g.state_dict())
            x = torch.randn(100, B, H)

            def c_path():
                return g(x)

            def numba_path():
                fused_cpu.cgru = lambda: None                           # the backend as without the extension
                try:
                    return g._backend_choice.clear() or g(x)
                finally:
                    fused_cpu.cgru = real

            with torch.no_grad():
                y_c, y_n = c_path()[0], numba_path()[0]
                assert (y_c - y_n).abs().max() < 1e-5
                n = max(1, int(0.02 / (lambda t0: (c_path(), time.process_time() - t0)[1])(time.process_time())))
                got = {"C": [], "numba": [], "aten": []}
                for r in range(args.rounds):
                    for k, f in (("C", c_path), ("numba", numba_path), ("aten", lambda: ref(x))):
                        if k == "C":
                            g._backend_choice.clear()
                            c_path()
                        t0 = time.process_time()
                        for _ in range(n):
                            f()
                        got[k].append((time.process_time() - t0) / n / 100 * 1e6)
            m = {k: statistics.median(v) for k, v in got.items()}
            print(f"{B:>3} {H:>4} {m['C']:>8.2f} {m['numba']:>8.2f} {m['aten']:>8.2f} {m['numba'] / m['C']:>8.2f} "
                  f"{m['numba'] / m['aten']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
