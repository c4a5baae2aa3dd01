"""GRUSpec: everything that decides which math a GRU runs, in one frozen, validated dataclass.

Backends are chosen from the spec (``backends.select``), never from module names.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

from ..errors import ArgumentTypeError, ConfigError, collect

__all__ = ["GRUSpec", "LayerParams"]


@dataclass(frozen=True)
class GRUSpec:
    input_size: int            # I: features per time step
    hidden_size: int           # H: state size per direction
    num_layers: int = 1        # L: stacked layers; layer k>0 reads the D*H outputs of layer k-1
    bias: bool = True          # b_ih and b_hh exist (torch's ``bias``)
    batch_first: bool = False  # (B, T, *) instead of (T, B, *) for input and output (not for h)
    dropout: float = 0.0       # dropout on the outputs of every layer but the last (torch's ``dropout``)
    bidirectional: bool = False  # D = 2: a second pass over the reversed sequence, outputs concatenated
    reset_after: bool = True   # True: torch/cuDNN/Keras-default GRU; False: Cho et al. 2014 (reset before matmul)
    layer_norm: bool = False   # LayerNorm on the input and recurrent pre-activations, per gate (Ba et al. 2016)
    recurrent_dropout: float = 0.0  # variational dropout on h before the recurrent matmul, one mask per sequence
    zoneout: float = 0.0       # probability of keeping each unit's previous state (Krueger et al. 2016)
    deterministic: bool = False  # bit-identical results run to run on one machine (see GRU docs for the cost)

    def __post_init__(self) -> None:
        wrong_type: list[str] = []                  # torch raises TypeError for these
        problems: list[str] = []                    # and ValueError for these
        for name in ("input_size", "hidden_size", "num_layers"):
            v = getattr(self, name)
            least = 0 if name == "hidden_size" else 1   # a GRUCell may have no units (torch's too); GRU checks
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                wrong_type.append(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
            elif v < least:
                problems.append(f"{name} must be {'a positive integer' if least else 'an integer >= 0'}, got {v!r}")
        for name in ("dropout", "recurrent_dropout", "zoneout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Number) or not 0 <= v <= 1:
                problems.append(f"{name} must be a probability in [0, 1], got {v!r}")
        for name in ("recurrent_dropout", "zoneout"):
            if getattr(self, name) == 1:
                problems.append(f"{name}=1 would freeze or zero the state at every step; use a value below 1")
        for name in ("bias", "batch_first", "bidirectional", "reset_after", "layer_norm", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                wrong_type.append(f"{name} must be True or False, got {getattr(self, name)!r}")
        collect(wrong_type + problems, ArgumentTypeError if wrong_type else ConfigError, "the GRU arguments")

    @property
    def num_directions(self) -> int:
        """D: 2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def is_plain(self) -> bool:
        """True when the spec is exactly a ``torch.nn.GRU`` (no grukit extra)."""
        return (self.reset_after and not self.layer_norm and self.recurrent_dropout == 0
                and self.zoneout == 0)

    def layer_input_size(self, layer: int) -> int:
        """Features read by ``layer``: I for the first, D*H for the others."""
        return self.input_size if layer == 0 else self.hidden_size * self.num_directions


class LayerParams(NamedTuple):
    """The parameters of one layer and direction, as the backends read them.

    ``w_ih`` ``(3H, I_l)``, ``w_hh`` ``(3H, H)``, biases ``(3H,)`` or ``None`` (``bias=False``), layer-norm
    gains and shifts ``(3, H)`` or ``None`` (``layer_norm=False``). Gate order ``(r, z, n)``.
    """
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None
    ln_ih_w: Tensor | None = None
    ln_ih_b: Tensor | None = None
    ln_hh_w: Tensor | None = None
    ln_hh_b: Tensor | None = None
