"""What ``GRU.frozen_weights()`` wins back: ``GRU.step`` per call outside vs inside the scope (the per-call
staleness check vs one check on entry), and ``language.generate`` tokens/s with the scope (after) vs a no-op
scope in its place (before); alternating blocks in one process, 1 thread, medians.

    python bench/frozen_weights.py
"""
from __future__ import annotations

import contextlib
import statistics
import time

import torch

from grukit.data.text import Vocab
from grukit.nn import GRU
from grukit.tasks import language as lm
from grukit.tasks.language_config import LMConfig


def step_us(g: GRU, x: torch.Tensor, h: torch.Tensor, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        g.step(x, h)
    return (time.perf_counter() - t) / n * 1e6


def bench_step(H: int, B: int, rounds: int = 15) -> None:
    g = GRU(H, H, backend="fused_cpu").eval()
    x, h = torch.randn(B, H), torch.zeros(1, B, H)
    n = 2000 if H <= 64 else 500
    out, ins = [], []
    with torch.no_grad():
        step_us(g, x, h, 50)
        for _ in range(rounds):
            out.append(step_us(g, x, h, n))
            with g.frozen_weights():
                ins.append(step_us(g, x, h, n))
    mo, mi = statistics.median(out), statistics.median(ins)
    print(f"GRU.step H={H} B={B}: outside {mo:.1f} us, inside {mi:.1f} us, {mo / mi:.2f}x", flush=True)


def bench_generate(H: int, B: int, tokens: int = 400, rounds: int = 9) -> None:
    chars = list("abcdefghijklmnopqrstuvwxyz .\n")
    cfg = LMConfig(data="x", hidden_size=H, embedding_size=H, num_layers=1, tokenize="char")
    model = lm.LMTask(cfg, {"vocab_size": len(chars), "tokenize": "char", "input_size": H}).eval()
    meta = {"vocab": Vocab(kind="char", itos=chars).to_dict()}
    real = lm.frozen_weights

    def rate(frozen: bool) -> float:
        lm.frozen_weights = real if frozen else (lambda *m: contextlib.nullcontext())
        try:
            t = time.perf_counter()
            for _ in lm.generate(model, meta, ["the "] * B, tokens, 1.0, seed=1):
                pass
            return tokens * B / (time.perf_counter() - t)
        finally:
            lm.frozen_weights = real

    rate(True), rate(False)
    before, after = [], []
    for _ in range(rounds):
        before.append(rate(False))
        after.append(rate(True))
    mb, ma = statistics.median(before), statistics.median(after)
    print(f"language.generate H={H} B={B}: before {mb:.0f} tok/s, after {ma:.0f} tok/s, {ma / mb:.2f}x", flush=True)


if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(description="GRU.step and language.generate with and without frozen_weights() "
                            "(see the docstring); no options").parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for H, B in [(64, 1), (64, 16), (256, 1), (256, 16)]:
        bench_step(H, B)
    for H, B in [(64, 1), (256, 1), (64, 16)]:
        bench_generate(H, B)
