"""Beyond torch.nn.GRU: a model holding a grukit GRU compiles with ``torch.compile(fullgraph=True)`` (no graph
break, the fused kernels inside the graph as ``grukit::gru_layer``), forward and backward, and exports with
``torch.export`` with dynamic batch and time sizes; the custom op's vmap rule runs batched inputs and stacked
weights. (torch.nn.GRU: a graph break under compile, pytorch #91439/#167275; no export with dynamic dims,
#120626/#126339; no vmap rule for aten::gru, #134606.)"""
from __future__ import annotations

import pytest
import torch

from grukit.nn import GRU, ops  # noqa: F401  (ops registers torch.ops.grukit)


class Net(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.gru = GRU(3, 8, batch_first=True, **kw)
        self.head = torch.nn.Linear(8 * (2 if self.gru.bidirectional else 1), 1)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])                         # (B, 1)


def _recording_backend(seen: list):
    """A torch.compile backend that records the operators of every graph it is given (forward and backward,
    through aot_autograd) and runs them eagerly."""
    from torch._dynamo.backends.common import aot_autograd

    def record(gm, example_inputs):  # noqa: ARG001
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward
    return aot_autograd(fw_compiler=record, bw_compiler=record)


@pytest.mark.parametrize("kw", [dict(num_layers=2), dict(bidirectional=True, reset_after=False)],
                         ids=["2layers", "bidir_cho"])
def test_compile_fullgraph_forward_and_backward(kw):
    torch.manual_seed(0)
    net = Net(**kw)
    x = torch.randn(4, 6, 3)
    seen: list[str] = []
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend=_recording_backend(seen))
    y = compiled(x)
    y.sum().backward()
    assert any("grukit.gru_layer.default" in s for s in seen)         # the fused forward is in the graph
    assert any("grukit.gru_layer_backward.default" in s for s in seen)
    got = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    want = net(x)
    want.sum().backward()
    torch.testing.assert_close(y, want, atol=1e-6, rtol=0)
    for n, p in net.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-5, rtol=0)


def test_export_with_dynamic_batch_and_time_runs_at_three_shapes():
    torch.manual_seed(0)
    net = Net(num_layers=2).eval()
    B, T = torch.export.Dim("B"), torch.export.Dim("T")
    ep = torch.export.export(net, (torch.randn(4, 6, 3),), dynamic_shapes={"x": {0: B, 1: T}})
    assert sum("grukit.gru_layer" in str(n.target) for n in ep.graph.nodes) == 2
    run = ep.module()
    with torch.no_grad():
        for shape in [(4, 6, 3), (1, 11, 3), (9, 2, 3)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(run(x), net(x), atol=1e-6, rtol=0)


def test_custom_op_vmap_rule_folds_batches_and_loops_over_stacked_weights():
    torch.manual_seed(0)
    T, B, I, H, n = 5, 2, 3, 4, 3
    w_ih, w_hh = torch.randn(3 * H, I), torch.randn(3 * H, H)
    b_ih, b_hh = torch.randn(3 * H), torch.randn(3 * H)
    xs, h0 = torch.randn(n, T, B, I), torch.zeros(B, H)
    op = torch.ops.grukit.gru_layer

    def run(x, wi=w_ih, wh=w_hh):
        return op(x, h0, wi, wh, b_ih, b_hh, None, False, True, 0.0)[0]

    want = torch.stack([run(x) for x in xs])
    torch.testing.assert_close(torch.vmap(run)(xs), want, atol=1e-6, rtol=0)         # folded into B
    whs = torch.randn(n, 3 * H, H)
    want = torch.stack([run(xs[0], w_ih, wh) for wh in whs])
    torch.testing.assert_close(torch.vmap(lambda wh: run(xs[0], w_ih, wh))(whs), want, atol=1e-6, rtol=0)


def test_opcheck_of_the_custom_ops():
    """torch.library.opcheck: schema, fake implementation, autograd registration agree with the real op."""
    torch.manual_seed(0)
    args = (torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True), torch.randn(2, 5, dtype=torch.float64),
            torch.randn(15, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(15, 5, dtype=torch.float64, requires_grad=True),
            torch.randn(15, dtype=torch.float64), torch.randn(15, dtype=torch.float64),
            torch.tensor([4, 2]), True, False, 0.0)
    torch.library.opcheck(torch.ops.grukit.gru_layer.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
