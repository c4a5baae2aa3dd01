"""Weight bridges between grukit and Keras 3 / ONNX GRUs.

Gate order: grukit and torch pack ``(r, z, n)``; Keras and ONNX pack ``(z, r, h)``. Keras stores transposed
kernels ``(I, 3H)`` / ``(H, 3H)``; its bias is ``(2, 3H)`` (input, recurrent) when ``reset_after=True`` and a
single input bias ``(3H,)`` when ``reset_after=False``. ONNX stores ``W (D, 3H, I)``, ``R (D, 3H, H)``,
``B (D, 6H)`` (input then recurrent biases), with ``linear_before_reset=1`` for the reset-after GRU.

In the reset-before (Cho) GRU both biases of each gate are plain additive terms, so Keras's single bias is
``b_ih + b_hh`` and loads as ``b_ih = bias, b_hh = 0``: the math is the same. A conversion that cannot be
represented (layer norm, other activations, a reset-gate variant mismatch) raises :class:`BridgeError`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["BridgeError", "keras_to_torch", "torch_to_keras", "load_keras_layer", "keras_weights",
           "onnx_weights", "load_onnx_weights"]


class BridgeError(ConfigError):
    """The weights cannot be moved without changing the math."""


def _zrh_to_rzn(a: np.ndarray, axis: int) -> np.ndarray:
    z, r, h = np.split(a, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


def _rzn_to_zrh(a: np.ndarray, axis: int) -> np.ndarray:
    r, z, n = np.split(a, 3, axis=axis)
    return np.concatenate([z, r, n], axis=axis)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def _check_module(module, layer: int, direction: int, what: str) -> None:
    s = module.spec
    if s.layer_norm:
        raise BridgeError(f"{what} has no layer-normalised GRU; a GRU built with layer_norm=True cannot be "
                          "converted (build it with layer_norm=False)")
    if not 0 <= layer < s.num_layers or direction not in range(s.num_directions):
        raise BridgeError(f"layer {layer}, direction {direction} does not exist in a GRU with "
                          f"num_layers={s.num_layers}, bidirectional={s.bidirectional}")


def keras_to_torch(kernel, recurrent_kernel, bias, reset_after: bool) -> dict[str, np.ndarray]:
    """Keras GRU arrays to ``weight_ih, weight_hh, bias_ih, bias_hh`` in torch's layout (bias may be None)."""
    kernel, recurrent_kernel = _np(kernel), _np(recurrent_kernel)
    if kernel.ndim != 2 or recurrent_kernel.ndim != 2 or kernel.shape[1] % 3:
        raise BridgeError(f"Keras kernels must be (I, 3H) and (H, 3H), got {kernel.shape} and "
                          f"{recurrent_kernel.shape}")
    H = kernel.shape[1] // 3
    out = {"weight_ih": _zrh_to_rzn(kernel.T, 0), "weight_hh": _zrh_to_rzn(recurrent_kernel.T, 0)}
    if bias is not None:
        bias = _np(bias)
        want = (2, 3 * H) if reset_after else (3 * H,)
        if bias.shape != want:
            raise BridgeError(f"a Keras GRU with reset_after={reset_after} has a bias of shape {want}, got "
                              f"{bias.shape}")
        b_i, b_h = (bias[0], bias[1]) if reset_after else (bias, np.zeros_like(bias))
        out["bias_ih"], out["bias_hh"] = _zrh_to_rzn(b_i, 0), _zrh_to_rzn(b_h, 0)
    return out


def torch_to_keras(weight_ih, weight_hh, bias_ih, bias_hh, reset_after: bool) -> list[np.ndarray]:
    """torch-layout arrays to Keras's ``[kernel, recurrent_kernel(, bias)]``."""
    out = [_rzn_to_zrh(_np(weight_ih), 0).T.copy(), _rzn_to_zrh(_np(weight_hh), 0).T.copy()]
    if bias_ih is not None:
        b_i, b_h = _rzn_to_zrh(_np(bias_ih), 0), _rzn_to_zrh(_np(bias_hh), 0)
        out.append(np.stack([b_i, b_h]) if reset_after else b_i + b_h)
    return out


def _keras_config_problems(layer, module) -> list[str]:
    cfg = layer.get_config()
    problems = []
    if cfg.get("activation") != "tanh":
        problems.append(f"activation={cfg.get('activation')!r} (grukit uses tanh)")
    if cfg.get("recurrent_activation") != "sigmoid":
        problems.append(f"recurrent_activation={cfg.get('recurrent_activation')!r} (grukit uses sigmoid)")
    if bool(cfg.get("reset_after")) != module.spec.reset_after:
        problems.append(f"reset_after={cfg.get('reset_after')} but the grukit GRU has "
                        f"reset_after={module.spec.reset_after}")
    if bool(cfg.get("use_bias")) != module.spec.bias:
        problems.append(f"use_bias={cfg.get('use_bias')} but the grukit GRU has bias={module.spec.bias}")
    return problems


def load_keras_layer(module, keras_layer, layer: int = 0, direction: int = 0) -> None:
    """Copy a built ``keras.layers.GRU``'s weights into one layer/direction of a grukit ``GRU``."""
    _check_module(module, layer, direction, "Keras")
    problems = _keras_config_problems(keras_layer, module)
    if problems:
        raise BridgeError("cannot load this Keras GRU: " + "; ".join(problems))
    weights = keras_layer.get_weights()
    arrays = keras_to_torch(weights[0], weights[1], weights[2] if len(weights) > 2 else None,
                            module.spec.reset_after)
    _assign(module, layer, direction, arrays)


def keras_weights(module, layer: int = 0, direction: int = 0) -> list[np.ndarray]:
    """One layer/direction of a grukit ``GRU`` as Keras ``set_weights`` arrays (same ``reset_after``)."""
    _check_module(module, layer, direction, "Keras")
    p = module.layer_params(layer, direction)
    return torch_to_keras(p.w_ih, p.w_hh, p.b_ih, p.b_hh, module.spec.reset_after)


def _assign(module, layer: int, direction: int, arrays: dict[str, np.ndarray]) -> None:
    sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    with torch.no_grad():
        for name, value in arrays.items():
            if name.startswith("bias") and not module.spec.bias:
                if np.any(value):
                    raise BridgeError(f"the source has a non-zero {name} but the grukit GRU has bias=False")
                continue
            p = getattr(module, name + sfx)
            if tuple(p.shape) != value.shape:
                raise BridgeError(f"{name}{sfx} has shape {tuple(p.shape)} but the source gives {value.shape}")
            p.copy_(torch.as_tensor(value, dtype=p.dtype))


def onnx_weights(module, layer: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(W, R, B, linear_before_reset)`` of one layer, all directions, for an ONNX ``GRU`` node."""
    _check_module(module, layer, 0, "ONNX")
    Ws, Rs, Bs = [], [], []
    for d in range(module.spec.num_directions):
        p = module.layer_params(layer, d)
        Ws.append(_rzn_to_zrh(_np(p.w_ih), 0))
        Rs.append(_rzn_to_zrh(_np(p.w_hh), 0))
        if p.b_ih is None:
            Bs.append(np.zeros(6 * module.spec.hidden_size, dtype=Ws[-1].dtype))
        else:
            Bs.append(np.concatenate([_rzn_to_zrh(_np(p.b_ih), 0), _rzn_to_zrh(_np(p.b_hh), 0)]))
    return np.stack(Ws), np.stack(Rs), np.stack(Bs), int(module.spec.reset_after)


def load_onnx_weights(module, W, R, B=None, linear_before_reset: int = 0, layer: int = 0) -> None:
    """Load an ONNX ``GRU`` node's ``W, R, B`` into one layer (all directions) of a grukit ``GRU``."""
    _check_module(module, layer, 0, "ONNX")
    if bool(linear_before_reset) != module.spec.reset_after:
        raise BridgeError(f"the ONNX GRU has linear_before_reset={linear_before_reset}, which is the "
                          f"reset_after={bool(linear_before_reset)} GRU, but the grukit GRU has "
                          f"reset_after={module.spec.reset_after}; build it with "
                          f"reset_after={bool(linear_before_reset)}")
    W, R = _np(W), _np(R)
    D = module.spec.num_directions
    if W.shape[0] != D or R.shape[0] != D:
        raise BridgeError(f"W and R must have {D} direction(s) on axis 0, got {W.shape} and {R.shape}")
    H3 = W.shape[1]
    B = np.zeros((D, 2 * H3), dtype=W.dtype) if B is None else _np(B)
    for d in range(D):
        _assign(module, layer, d, {"weight_ih": _zrh_to_rzn(W[d], 0), "weight_hh": _zrh_to_rzn(R[d], 0),
                                   "bias_ih": _zrh_to_rzn(B[d][:H3], 0), "bias_hh": _zrh_to_rzn(B[d][H3:], 0)})
