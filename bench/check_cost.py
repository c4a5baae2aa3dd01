"""The weight-staleness rule's cost on bench/engine.py's grid: ``GRU(x)`` (T=100) and ``GRU.step`` per cell, in
one of two modes, so that two checkouts (or one) can be compared in alternating processes:

* ``--mode check``: the code as it is (every call sees the weights' current values);
* ``--mode nocheck``: the weight cache trusts whatever it packed first (``WeightCache.get``/``peek`` return the
  current generation without looking at the weights): the "no check at all" timing.

    python bench/check_cost.py --mode check --json /tmp/a.json          # one process, one mode
    python bench/check_cost.py --compare OLD_CHECKOUT --rounds 3        # alternate OLD --mode nocheck / this one

``--compare`` runs ``--rounds`` rounds, each one process of ``OLD_CHECKOUT`` in nocheck mode and one of this
checkout in check mode (order alternating), and prints per cell the medians over rounds and the ratio new/old.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

GRID_B, GRID_H = (1, 8, 64), (64, 128, 256, 512)


def _bypass() -> None:
    from grukit.nn.backends import weight_cache as wc

    def get(self, module):
        p = self._packed.get(module)
        if p is None:
            p = self._packed[module] = wc.Packed(wc.weight_tensors(module))
        return p

    wc.WeightCache.get = get
    wc.WeightCache.peek = lambda self, module: self._packed.get(module)


def measure(cells, step_hs, T: int, repeats: int, budget_s: float) -> dict[str, float]:
    import torch
    from grukit.nn import GRU
    torch.manual_seed(0)
    out = {}

    def timed(fn, n):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            ts.append((time.perf_counter() - t0) / n)
        return statistics.median(ts)

    with torch.no_grad():
        for B, H, I in cells:
            g = GRU(I, H).eval()
            x = torch.randn(T, B, I)
            g(x), g(x)
            t0 = time.perf_counter()
            g(x)
            n = max(1, int(budget_s / max(time.perf_counter() - t0, 1e-6)))
            out[f"forward B={B} H={H} I={I}"] = timed(lambda: g(x), n) / T * 1e6      # us per time step
        for H in step_hs:
            g = GRU(H, H).eval()
            x1 = torch.randn(1, H)
            h = torch.zeros(1, 1, H)
            g.step(x1, h), g.step(x1, h)
            out[f"step B=1 H={H}"] = timed(lambda: g.step(x1, h), 200) * 1e6        # us per call
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["check", "nocheck"], default="check")
    ap.add_argument("--json")
    ap.add_argument("--compare", help="another checkout: its nocheck timings against this one's check timings")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--budget", type=float, default=0.02, help="seconds per timed repeat (forward cells)")
    ap.add_argument("--small", action="store_true", help="B=1 cells only")
    args = ap.parse_args(argv)
    if args.compare:
        here = Path(__file__).resolve().parents[1]
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        for r in range(args.rounds):
            order = [("old", Path(args.compare), "nocheck"), ("new", here, "check")]
            for tag, root, mode in (order if r % 2 == 0 else order[::-1]):
                js = f"/tmp/check_cost_{os.getpid()}_{tag}.json"
                cmd = [sys.executable, str(here / "bench" / "check_cost.py"), "--mode", mode, "--json", js,
                       "--repeats", str(args.repeats), "--budget", str(args.budget)] + (["--small"] if args.small else [])
                subprocess.run(cmd, check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
                runs[tag].append(json.loads(Path(js).read_text()))
        print(f"{'cell':<28} {'old nocheck':>12} {'new check':>10} {'ratio':>7}   (us per step / per call; "
              f"medians of {args.rounds} alternating processes)")
        for k in runs["old"][0]:
            a = statistics.median(r[k] for r in runs["old"])
            b = statistics.median(r[k] for r in runs["new"])
            print(f"{k:<28} {a:>12.3f} {b:>10.3f} {b / a:>7.3f}")
        return 0
    if args.mode == "nocheck":
        _bypass()
    import torch
    torch.set_num_threads(1)
    Bs = (1,) if args.small else GRID_B
    cells = [(B, H, I) for B in Bs for H in GRID_H for I in (H, 40)]
    res = measure(cells, list(GRID_H), 100, args.repeats, args.budget)
    if args.json:
        Path(args.json).write_text(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:<28} {v:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
