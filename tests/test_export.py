"""ONNX export: GRU operators that onnxruntime runs with PyTorch's results, refusals, and the self-check."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from grukit import export as ex  # noqa: E402
from grukit.nn import onnx as onnx_forward  # noqa: E402
from grukit.nn import GRU, MinGRU  # noqa: E402

CONFIGS = {
    "plain": {},
    "2-layer-bi-batch-first": dict(num_layers=2, bidirectional=True, batch_first=True),
    "cho-2-layer": dict(reset_after=False, num_layers=2),
    "cho-bi-3-layer": dict(reset_after=False, bidirectional=True, num_layers=3),
    "no-bias-dropouts": dict(bias=False, num_layers=2, dropout=0.3, recurrent_dropout=0.2),
}


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_gru_exports_as_onnx_gru_ops_and_matches(tmp_path, name, lengths):
    gru = GRU(4, 6, **CONFIGS[name]).eval()
    res = ex.to_onnx(gru, tmp_path / "gru.onnx", lengths=lengths)
    assert res.path.is_file() and res.max_abs_diff < 1e-5 and res.checked == 3
    model = onnx.load(str(res.path))
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(grus) == gru.num_layers
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in grus[0].attribute}
    assert attrs["linear_before_reset"] == int(gru.spec.reset_after)
    assert attrs["direction"] == (b"bidirectional" if gru.bidirectional else b"forward")
    assert (grus[0].input[4] != "") == lengths            # sequence_lens wired only when asked
    # dynamic axes: a batch and length never seen at export time
    import onnxruntime as ort
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    B, T = 9, 21
    x = torch.randn((B, T, 4) if gru.batch_first else (T, B, 4))
    h0 = torch.randn(gru.num_layers * (2 if gru.bidirectional else 1), B, 6)
    feeds = {"x": x.numpy(), "h0": h0.numpy()}
    lens = torch.randint(1, T + 1, (B,))
    if lengths:
        feeds["lengths"] = lens.numpy()
    y, h_n = sess.run(None, feeds)
    with torch.no_grad():
        ref_y, ref_h = gru(x, h0, lengths=lens) if lengths else gru(x, h0)
    torch.testing.assert_close(torch.from_numpy(y), ref_y, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.from_numpy(h_n), ref_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model,pattern", [
    (GRU(3, 4, layer_norm=True), "layer_norm=True has no ONNX GRU form"),
    (GRU(3, 4, zoneout=0.1), "zoneout=0.1 changes the recurrence"),
    (torch.nn.Sequential(MinGRU(3, 4)), "MinGRU's log-space parallel scan"),
])
def test_refuses_what_onnx_cannot_express(tmp_path, model, pattern):
    with pytest.raises(ex.ExportError, match=pattern):
        ex.export_module(model, tmp_path / "m.onnx", (torch.randn(5, 2, 3),), input_names=["x"],
                         output_names=["y", "h"])
    assert not list(tmp_path.iterdir())


def test_a_file_that_disagrees_with_pytorch_is_not_kept(tmp_path, monkeypatch):
    """Break the gate reordering: onnxruntime then disagrees, and the export deletes its file."""
    monkeypatch.setattr(onnx_forward, "_zrh", lambda t, H: t)                   # torch's (r, z, n) left as is
    with pytest.raises(ex.ExportError, match="differs from PyTorch"):
        ex.to_onnx(GRU(3, 4), tmp_path / "bad.onnx")
    assert not list(tmp_path.iterdir())


def test_to_onnx_wants_a_gru(tmp_path):
    with pytest.raises(ValueError, match="exports a grukit.nn.GRU"):
        ex.to_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")


def test_task_model_export_from_a_run(tmp_path):
    """A trained classifier run exports whole (GRU + pooling + head) and is verified on its real data."""
    import numpy as np

    from grukit.cli import main
    from grukit.runs import open_run
    from grukit.train import fit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 12, 3)).astype("float32")
    y = (X[:, :, 0].mean(1) > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y, lengths=rng.integers(4, 13, 40))
    fit("classify", data=str(tmp_path / "d.npz"), max_epochs=1, hidden_size=8, out=tmp_path / "run",
        progress=False, evaluate=False)
    res = ex.export_run(open_run(tmp_path / "run"))
    assert res.path == tmp_path / "run" / "model.onnx" and res.max_abs_diff < 1e-4
    names = [i.name for i in onnx.load(str(res.path)).graph.input]
    assert names[:2] == ["x", "lengths"]
    assert main(["export", str(tmp_path / "run"), "--format", "tflite"]) == 2


def test_exporting_a_combined_forecaster_says_the_graph_is_the_network_alone(tmp_path):
    """A forecast run that averages the network with statistical forecasts (combine) exports the network: the
    export says so, since the graph's forecasts then differ from grukit predict's."""
    import warnings
    from grukit.runs import open_run
    from grukit.train import fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit("forecast", data="nile", max_epochs=1, hidden_size=8, out=tmp_path / "run", progress=False,
            evaluate=False, combine=("theta",))
    with pytest.warns(UserWarning, match=r"the ONNX graph is the network alone; this run's forecasts average it "
                                         r"with theta"):
        res = ex.export_run(open_run(tmp_path / "run"))
    assert res.max_abs_diff < 1e-4
