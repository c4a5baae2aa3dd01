"""The reset-after and Cho GRUs against references no one here wrote: Keras 3 and ONNX's reference evaluator."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from grukit.nn import GRU
from grukit.nn.bridges import BridgeError, keras_weights, load_keras_layer, load_onnx_weights, onnx_weights

I, H, T, B = 3, 5, 7, 2


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on the {keras.backend.backend()} backend; these tests need KERAS_BACKEND=torch")
    return keras


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("use_h0", [True, False])
def test_keras_gru_both_ways(keras, reset_after, use_h0):
    layer = keras.layers.GRU(H, reset_after=reset_after, return_sequences=True, return_state=True)
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype("float32")
    h0 = np.random.default_rng(1).standard_normal((B, H)).astype("float32")
    y_k, h_k = layer(x, initial_state=[h0] if use_h0 else None)
    ours = GRU(I, H, batch_first=True, reset_after=reset_after)
    load_keras_layer(ours, layer)
    with torch.no_grad():
        y, h = ours(torch.from_numpy(x), torch.from_numpy(h0)[None] if use_h0 else None)
    np.testing.assert_allclose(y.numpy(), keras.ops.convert_to_numpy(y_k), atol=1e-5)
    np.testing.assert_allclose(h[0].numpy(), keras.ops.convert_to_numpy(h_k), atol=1e-5)
    # and back: a fresh grukit GRU's weights into the Keras layer
    fresh = GRU(I, H, batch_first=True, reset_after=reset_after)
    layer.set_weights(keras_weights(fresh))
    y_k2, _ = layer(x)
    with torch.no_grad():
        np.testing.assert_allclose(fresh(torch.from_numpy(x))[0].numpy(), keras.ops.convert_to_numpy(y_k2),
                                   atol=1e-5)


def test_keras_refuses_what_cannot_be_represented(keras):
    layer = keras.layers.GRU(H, reset_after=False)
    layer.build((B, T, I))
    with pytest.raises(BridgeError, match="reset_after=False but the grukit GRU has reset_after=True"):
        load_keras_layer(GRU(I, H), layer)
    with pytest.raises(BridgeError, match="layer_norm=True"):
        load_keras_layer(GRU(I, H, layer_norm=True, reset_after=False), layer)
    relu = keras.layers.GRU(H, activation="relu")
    relu.build((B, T, I))
    with pytest.raises(BridgeError, match="activation='relu'"):
        load_keras_layer(GRU(I, H), relu)


def _onnx_run(W, R, Bias, lbr, direction, x, h0):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    inputs = ["X", "W", "R", "B", "", "initial_h"] if h0 is not None else ["X", "W", "R", "B"]
    node = helper.make_node("GRU", inputs, ["Y", "Y_h"], hidden_size=H, linear_before_reset=lbr,
                            direction=direction)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None)
                                            for n in inputs if n],
                              [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in ("Y", "Y_h")])
    feeds = {"X": x, "W": W, "R": R, "B": Bias}
    if h0 is not None:
        feeds["initial_h"] = h0
    return ReferenceEvaluator(helper.make_model(graph)).run(None, feeds)


@pytest.mark.parametrize("use_h0", [True, False])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lbr", [1, 0])
def test_onnx_reference_evaluator(lbr, direction, use_h0):
    bi = direction == "bidirectional"
    ours = GRU(I, H, bidirectional=bi, reset_after=bool(lbr), dtype=torch.float64)
    D = 2 if bi else 1
    x = np.random.default_rng(0).standard_normal((T, B, I))
    h0 = np.random.default_rng(1).standard_normal((D, B, H)) if use_h0 else None
    W, R, Bias, got_lbr = onnx_weights(ours)
    assert got_lbr == lbr
    if direction == "reverse":  # a one-direction reverse node is the backward half of a bidirectional GRU
        bi_gru = GRU(I, H, bidirectional=True, reset_after=bool(lbr), dtype=torch.float64)
        W2, R2, B2, _ = onnx_weights(bi_gru)
        W, R, Bias = W2[1:], R2[1:], B2[1:]
        with torch.no_grad():
            h_in = torch.cat([torch.zeros(1, B, H, dtype=torch.float64), torch.from_numpy(h0)]) if use_h0 else None
            y, h = bi_gru(torch.from_numpy(x), h_in)
        y, h = y[..., H:].unsqueeze(1), h[1:]
    else:
        with torch.no_grad():
            y, h = ours(torch.from_numpy(x), None if h0 is None else torch.from_numpy(h0))
        y = y.view(T, B, D, H).transpose(1, 2)                              # (T, B, D*H) -> (T, D, B, H)
    Y, Y_h = _onnx_run(W, R, Bias, lbr, direction, x, h0)
    np.testing.assert_allclose(y.numpy(), Y, atol=1e-10)
    np.testing.assert_allclose(h.numpy(), Y_h, atol=1e-10)
    # the other way: ONNX weights into a fresh grukit GRU reproduce the same outputs
    if direction != "reverse":
        back = GRU(I, H, bidirectional=bi, reset_after=bool(lbr), dtype=torch.float64)
        load_onnx_weights(back, W, R, Bias, lbr)
        for a, b in zip(back.parameters(), ours.parameters()):
            assert torch.equal(a, b)


def test_onnx_refuses_variant_mismatch():
    W, R, Bias, _ = onnx_weights(GRU(I, H))
    with pytest.raises(BridgeError, match="linear_before_reset=1.*build it with reset_after=True"):
        load_onnx_weights(GRU(I, H, reset_after=False), W, R, Bias, 1)
