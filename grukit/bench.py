"""Engine benchmarks: grukit's GRU against torch.nn.GRU, torch.nn.GRUCell and onnxruntime.

Every peer runs in this process on the same inputs and the same weights, each in its own block of back-to-back
calls (see :func:`_blocks` for why not call by call), and the table reports medians. Outputs are checked to agree
before anything is timed. ``grukit bench`` prints :func:`run` (short); ``python bench/engine.py`` runs the full
grid.

Sections:

* **inference**: ``GRU(I, H)(x)`` for a whole sequence (T steps), microseconds per time step.
* **streaming**: one call per time step at B=1: ``GRU.step``, a :class:`grukit.nn.GRUStream` fed torch frames
  (``stream``) and numpy frames (``stream_np``), against ``GRUCell`` and an ONNX GRU of one step.
* **training**: forward + backward of ``GRU(H, H)`` over ``(T, B, H)``, steps per second.

``floor`` is the larger of two bounds no implementation beats: the cell's multiply-adds at the matmul peak this
run measured (a large ``torch.mm``), and the time to read ``W_hh`` once from cache (a compiled, vectorised sum
over an array of its size, measured here), which is what bounds a step at B=1.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .nn import GRU, backends

__all__ = ["run", "inference", "streaming", "training", "format_rows", "ort_gru_session", "peak_gflops"]


@dataclass
class Settings:
    threads: int = 2          # torch, onnxruntime and numba threads
    T: int = 100              # time steps of a sequence (inference, training)
    repeats: int = 15         # timed repeats per cell (medians reported)
    stream_steps: int = 200   # calls per streaming repeat


def _median(times: list[float]) -> float:
    return statistics.median(times)


def _blocks(fns: dict[str, Callable[[], object]], repeats: int, warm_s: float = 0.03) -> dict[str, float]:
    """Median seconds of each ``fn``, each peer timed in its own block of back-to-back calls, after a 10 ms pause
    and at least ``warm_s`` of untimed calls.

    Why blocks and not peers interleaved call by call: on a small machine each library's threads disturb the
    next one (torch's OpenMP workers and onnxruntime's pool keep spinning after a call returns, onnxruntime's
    for up to a second: onnxruntime PR 11841; measured here: grukit 10x slower right after torch.nn.GRU), and
    after any pause a core runs slowly for a while (grukit B=1 H=64 1.6 us/step back to back, 3.6 after a 5 ms
    sleep and one untimed call). Blocks let every peer run as it would in a service that calls it in a loop.
    Callers drop an onnxruntime session after its block, so its spinning threads go with it."""
    out = {}
    for k, f in fns.items():
        time.sleep(0.01)
        t_end = time.perf_counter() + warm_s
        n = 0
        while n < 2 or time.perf_counter() < t_end:
            f()
            n += 1
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        out[k] = _median(times)
    return out


def peak_gflops(threads: int = 2, n: int = 1024, repeats: int = 7) -> float:
    """float32 matmul peak of this machine now: a ``n x n`` ``torch.mm``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = _blocks({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    return 2 * n ** 3 / t / 1e9


_READ = {}


def read_floor_us(n_floats: int, repeats: int = 201) -> float:
    """Microseconds to read ``n_floats`` float32 values once from cache (numba, one thread, vectorised sum;
    the array stays hot across repeats). ``nan`` when numba is missing."""
    if n_floats in _READ:
        return _READ[n_floats]
    try:
        from numba import njit
    except ImportError:
        return float("nan")
    if "fn" not in _READ:
        @njit(fastmath=True, cache=False)
        def total(a, reps):
            s = np.float32(0)
            for _ in range(reps):
                for i in range(a.shape[0]):
                    s += a[i]
            return s
        _READ["fn"] = total
    fn = _READ["fn"]
    a = np.random.default_rng(0).standard_normal(n_floats).astype(np.float32)
    fn(a, 3)
    reps = max(1, 2_000_000 // n_floats)
    t = _blocks({"read": lambda: fn(a, reps)}, repeats // 20 + 3)["read"]
    _READ[n_floats] = t / reps * 1e6
    return _READ[n_floats]


# ---------------------------------------------------------------------------------------------- onnxruntime
def ort_gru_session(gru: torch.nn.Module, threads: int = 2):
    """An onnxruntime session of one ONNX ``GRU`` node with ``gru``'s weights (1 layer, 1 direction, float32).

    Inputs ``X`` ``(T, B, I)`` and ``initial_h`` ``(1, B, H)``; outputs ``Y`` ``(T, 1, B, H)`` and ``Y_h``.
    Returns ``None`` when onnx or onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    H = gru.hidden_size
    w = {n: getattr(gru, n).detach().float().numpy() for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                                               "bias_hh_l0")}

    def zrn(a):                                   # torch packs (r, z, n), ONNX (z, r, h)
        return np.concatenate([a[H:2 * H], a[:H], a[2 * H:]], 0)

    inits = [numpy_helper.from_array(zrn(w["weight_ih_l0"])[None], "W"),               # (1, 3H, I)
             numpy_helper.from_array(zrn(w["weight_hh_l0"])[None], "R"),               # (1, 3H, H)
             numpy_helper.from_array(np.concatenate([zrn(w["bias_ih_l0"]), zrn(w["bias_hh_l0"])])[None], "B")]
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "initial_h"], ["Y", "Y_h"], hidden_size=H,
                            linear_before_reset=1)
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "gru", [helper.make_tensor_value_info("X", f, ["T", "B", gru.input_size]),
                        helper.make_tensor_value_info("initial_h", f, [1, "B", H])],
        [helper.make_tensor_value_info("Y", f, None), helper.make_tensor_value_info("Y_h", f, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _pair(I: int, H: int, seed: int = 0) -> tuple[torch.nn.GRU, GRU]:
    torch.manual_seed(seed)
    ref = torch.nn.GRU(I, H)
    ours = GRU(I, H)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


# ---------------------------------------------------------------------------------------------- sections
def inference(cells: list[tuple[int, int, int]], s: Settings, peak: float) -> list[dict]:
    """``cells`` of ``(B, H, I)``; microseconds per time step of a whole-sequence forward."""
    rows = []
    for B, H, I in cells:
        ref, ours = _pair(I, H)
        x = torch.randn(s.T, B, I)
        h0 = torch.zeros(1, B, H)
        feed = {"X": x.numpy(), "initial_h": h0.numpy()}
        with torch.no_grad():
            y_ref, _ = ref(x)
            y_ours, _ = ours(x)
            used = backends.last_used()
            err = float((y_ours - y_ref).abs().max())
            # Each peer's first call (its output check) only after the previous peer's block: onnxruntime's
            # workers spin for up to a second after a run and would share the cores with grukit's block.
            t = _blocks({"grukit": lambda: ours(x)}, s.repeats)
            sess = ort_gru_session(ref, s.threads)
            if sess is not None:
                err = max(err, float(np.abs(sess.run(["Y"], feed)[0][:, 0] - y_ref.numpy()).max()))
                t.update(_blocks({"ort": lambda: sess.run(["Y"], feed)}, s.repeats))
            sess = None                                     # onnxruntime's spinning threads go with it
            t.update(_blocks({"torch": lambda: ref(x)}, s.repeats))
        us = {k: v / s.T * 1e6 for k, v in t.items()}
        floor = max(2 * B * 3 * H * (I + H) / (peak * 1e9) * 1e6, read_floor_us(3 * H * H))
        rows.append(dict(B=B, H=H, I=I, torch=us["torch"], ort=us.get("ort"), grukit=us["grukit"], floor=floor,
                         x_torch=us["torch"] / us["grukit"],
                         x_ort=None if "ort" not in us else us["ort"] / us["grukit"],
                         x_floor=us["grukit"] / floor, backend=used, max_err=err))
    return rows


def streaming(Hs: list[int], s: Settings, B: int = 1) -> list[dict]:
    """Microseconds per ``step`` call at batch ``B`` (input size I = H)."""
    rows = []
    for H in Hs:
        ref, ours = _pair(H, H)
        ours.eval()
        cell = torch.nn.GRUCell(H, H)
        cell.load_state_dict({k[:-3]: v for k, v in ref.state_dict().items()})
        sess = None
        xs = torch.randn(s.stream_steps, B, H)
        n = s.stream_steps
        backend = backends.select_step("auto", ours.spec, xs[0], False)

        def run_cell():
            h = torch.zeros(B, H)
            for t in range(n):
                h = cell(xs[t], h)
            return h

        def run_ours():
            h = torch.zeros(1, B, H)
            for t in range(n):
                _, h = ours.step(xs[t], h)
            return h

        def run_kernel():                        # the backend's step alone, without GRU.step's input checks
            h = torch.zeros(1, B, H)
            for t in range(n):
                h = backend.step(ours, xs[t], h)
            return h

        stream = ours.stream(batch_size=B)
        xs_np = [xs[t].numpy() for t in range(n)]

        def run_stream():
            stream.reset()
            for t in range(n):
                y = stream(xs[t])
            return y

        def run_stream_np():
            stream.reset()
            for t in range(n):
                y = stream(xs_np[t])
            return y

        xn = xs.numpy()[:, None]                 # (n, 1, B, H): one ONNX sequence of T=1 per step

        def run_ort():
            h = np.zeros((1, B, H), np.float32)
            for t in range(n):
                h = sess.run(["Y_h"], {"X": xn[t], "initial_h": h})[0]
            return h

        with torch.no_grad():
            h_ref = run_cell()
            err = float((run_ours()[-1] - h_ref).abs().max())
            err = max(err, float((run_stream() - h_ref).abs().max()),
                      float(np.abs(run_stream_np() - h_ref.numpy()).max()))
            reps = max(3, s.repeats // 2)
            t = _blocks({"grukit": run_ours, "kernel": run_kernel, "stream": run_stream, "stream_np": run_stream_np},
                        reps)
            sess = ort_gru_session(ref, s.threads)     # first run only after grukit's blocks (see inference)
            if sess is not None:
                err = max(err, float(np.abs(run_ort()[0] - h_ref.numpy()).max()))
                t.update(_blocks({"ort": run_ort}, reps))
            sess = None                                # onnxruntime's spinning threads go with it
            t.update(_blocks({"torch": run_cell}, reps))
            used = backends.last_used()
        us = {k: v / n * 1e6 for k, v in t.items()}
        best = min(us["stream"], us["stream_np"])
        rows.append(dict(B=B, H=H, torch_cell=us["torch"], ort=us.get("ort"), step=us["grukit"],
                         backend_step=us["kernel"], stream=us["stream"], stream_np=us["stream_np"],
                         x_torch_step=us["torch"] / us["grukit"], x_torch_stream=us["torch"] / us["stream"],
                         x_torch_best=us["torch"] / best, x_ort_best=None if "ort" not in us else us["ort"] / best,
                         backend=used, max_err=err))
    return rows


def training(cells: list[tuple[int, int]], s: Settings) -> list[dict]:
    """``cells`` of ``(B, H)``: forward + backward of ``GRU(H, H)`` on ``(T, B, H)``, steps per second."""
    rows = []
    for B, H in cells:
        ref, ours = _pair(H, H)
        x = torch.randn(s.T, B, H)
        gy = torch.randn(s.T, B, H)

        def step(m):
            def f():
                m.zero_grad(set_to_none=True)
                y, _ = m(x)
                (y * gy).sum().backward()
            return f

        step(ref)()
        step(ours)()
        used = backends.last_used()
        err = max(float((a.grad - b.grad).abs().max()) for a, b in zip(ref.parameters(), ours.parameters()))
        t = _blocks({"grukit": step(ours), "torch": step(ref)}, max(3, s.repeats // 2), warm_s=0.0)
        flops = 3 * 2 * s.T * B * 3 * H * (H + H)          # backward ~ 2x forward
        rows.append(dict(B=B, H=H, torch=1 / t["torch"], grukit=1 / t["grukit"], x_torch=t["torch"] / t["grukit"],
                         torch_gflops=flops / t["torch"] / 1e9, grukit_gflops=flops / t["grukit"] / 1e9,
                         backend=used, max_grad_err=err))
    return rows


# ---------------------------------------------------------------------------------------------- output
def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def format_rows(title: str, rows: list[dict]) -> str:
    """A plain-text table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, width))  # noqa: E731
    return "\n".join([title, line(cols), *(line(r) for r in cells)])


GRID_B, GRID_H = (1, 8, 64), (64, 128, 256, 512)


def run(short: bool = True, sections: tuple[str, ...] = ("inference", "streaming", "training"),
        settings: Settings | None = None) -> str:
    """Run the benchmarks and return the tables as text.

    ``short`` runs a few representative cells in about a minute; ``short=False`` the full grid (B in 1, 8, 64;
    H in 64..512; I = H and I = 40; streaming H in 64..512; training B in 16, 64 and H in 128, 256).
    """
    s = settings or Settings(repeats=9 if short else 21)
    torch.set_num_threads(s.threads)
    try:
        import numba
        numba.set_num_threads(min(s.threads, numba.config.NUMBA_NUM_THREADS))
        layer = f", numba threading layer on first parallel use: {numba.config.THREADING_LAYER}"
    except ImportError:
        layer = ""
    peak = peak_gflops(s.threads)
    out = [f"grukit bench: {s.threads} threads, T={s.T}, float32, medians of {s.repeats} repeats; "
           f"matmul peak {peak:.0f} GFLOP/s{layer}",
           "inference/streaming: microseconds per time step (lower is better); x_torch, x_ort: speed-up of grukit"]
    if "inference" in sections:
        cells = ([(1, 64, 64), (1, 256, 256), (8, 128, 128), (64, 256, 256)] if short else
                 [(B, H, I) for B in GRID_B for H in GRID_H for I in (H, 40)])
        out.append(format_rows("\ninference (whole sequence)", inference(cells, s, peak)))
    if "streaming" in sections:
        out.append(format_rows("\nstreaming (one call per step, B=1)",
                               streaming([64, 256] if short else list(GRID_H), s)))
    if "training" in sections:
        cells = [(16, 128), (64, 256)] if short else [(B, H) for B in (16, 64) for H in (128, 256)]
        out.append(format_rows("\ntraining (forward + backward, steps/s; higher is better)", training(cells, s)))
    return "\n".join(out)
