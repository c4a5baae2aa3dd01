"""The staleness rule's cost in one process, CPU time, alternating blocks, medians (steadier than
``check_cost.py``'s alternating processes on a shared machine):

* ``GRU(x)`` (T=100, 1 thread) per cell with the rule against ``WeightCache.peek``/``get`` bypassed (the packed
  plan trusted without looking at the weights: "no check at all");
* ``--step``: ``GRU.step`` (B=1) through today's fast path (the compiled step reading the weights in place)
  against the previous fast path with its check bypassed (a packed ``_cgru.Stream`` per module, state copied in
  and out through numpy), both called through ``GRU.step``.

    python bench/check_cost_inprocess.py                      # the inference grid of bench/engine.py
    python bench/check_cost_inprocess.py 1,64,64 1,256,256    # cells B,H,I
    python bench/check_cost_inprocess.py --step 64 128 256 512
    python bench/check_cost_inprocess.py --step --batch 16 64 256     # 16 streams, H = 64 and 256 (a serving tick)
"""
from __future__ import annotations

import statistics
import sys
import threading
import time

import torch
from torch import Tensor

from grukit.nn import GRU
from grukit.nn.backends import fused_cpu as fc
from grukit.nn.backends import weight_cache as wc
from grukit.nn.gru import FastPath

GRID = [(B, H, I) for B in (1, 8, 64) for H in (64, 128, 256, 512) for I in (H, 40)]
_PEEK, _GET = wc.WeightCache.peek, wc.WeightCache.get


def _bypass(on: bool) -> None:
    if on:
        wc.WeightCache.peek = lambda self, m: self._packed.get(m)
        wc.WeightCache.get = lambda self, m: self._packed.get(m) or _GET(self, m)
    else:
        wc.WeightCache.peek, wc.WeightCache.get = _PEEK, _GET


def forward(cells, rounds: int = 15) -> None:
    for B, H, I in cells:
        g = GRU(I, H).eval()
        x = torch.randn(100, B, I)
        with torch.no_grad():
            g(x), g(x)
            t0 = time.process_time()
            g(x)
            n = max(2, int(0.03 / max(time.process_time() - t0, 1e-5)))
            got: dict[str, list[float]] = {"nocheck": [], "check": []}
            for r in range(rounds):
                for k in (("nocheck", "check") if r % 2 else ("check", "nocheck")):
                    _bypass(k == "nocheck")
                    g(x)
                    t0 = time.process_time()
                    for _ in range(n):
                        g(x)
                    got[k].append((time.process_time() - t0) / n / 100 * 1e6)
            _bypass(False)
        a, b = statistics.median(got["nocheck"]), statistics.median(got["check"])
        print(f"forward B={B} H={H} I={I}: no check {a:.3f}, check {b:.3f} us/step, ratio {b / a:.3f}", flush=True)


def _previous_step_fast(c):
    """The fast path of GRU.step before the in-place step, its weight check bypassed."""
    streams: dict = {}

    def call(module, x_t, h):
        if (type(x_t) is not Tensor or x_t.dtype != torch.float32 or x_t.ndim != 2 or not x_t.is_cpu
                or not x_t.is_contiguous()):
            return None
        key = (x_t.shape[0], threading.get_ident())
        packed = streams.get(key)
        if packed is None:
            packed = streams[key] = fc._compiled_stream(c, module, x_t.shape[0])
        state = packed.state
        if h is not None and not (type(h) is Tensor and h.dtype == torch.float32 and h.is_cpu
                                  and h.is_contiguous() and h.shape == state.shape):
            return None
        h_new = fc._packed_frame(packed, x_t.numpy(), None if h is None else h.numpy())
        return h_new[-1], h_new
    return call


def step(Hs, rounds: int = 21, B: int = 1) -> None:
    c = fc.cgru()
    for H in Hs:
        g = GRU(H, H).eval()
        x1, h = torch.randn(B, H), torch.zeros(1, B, H)
        with torch.no_grad():
            g.step(x1, h), g.step(x1, h)
            paths = {"now": g._backend_choice[("fast", "step")],
                     "previous": FastPath(False, _previous_step_fast(c), "fused_cpu")}
            torch.testing.assert_close(paths["now"].call(g, x1, h)[1], paths["previous"].call(g, x1, h)[1],
                                       atol=1e-5, rtol=0)
            got: dict[str, list[float]] = {k: [] for k in paths}
            n = max(5, (400 if H <= 128 else 100) // B)
            for r in range(rounds):
                for k in (("previous", "now") if r % 2 else ("now", "previous")):
                    g._backend_choice[("fast", "step")] = paths[k]
                    g.step(x1, h)
                    t0 = time.process_time()
                    for _ in range(n):
                        g.step(x1, h)
                    got[k].append((time.process_time() - t0) / n * 1e6)
        a, b = statistics.median(got["previous"]), statistics.median(got["now"])
        print(f"step B={B} H={H}: previous, no check {a:.2f} us; now, in place {b:.2f} us; ratio {b / a:.3f}", flush=True)


def main(argv: list[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="The staleness rule's cost in one process (see the docstring)")
    ap.add_argument("items", nargs="*", help="cells B,H,I (forward), or hidden sizes with --step")
    ap.add_argument("--step", action="store_true", help="time GRU.step instead of GRU(x)")
    ap.add_argument("--batch", type=int, default=1, help="--step: streams per step call")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.step:
        step([int(a) for a in args.items] or [64, 128, 256, 512], B=args.batch)
    else:
        forward([tuple(map(int, a.split(","))) for a in args.items] or GRID)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
