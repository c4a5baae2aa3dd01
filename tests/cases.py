"""The one table of cases that drives the engine's parity tests (STYLE.md, example 5).

Every generic test (forward, gradients, gradcheck, step, dispatch) is parametrised over these lists; adding a
backend to the registry adds it to every test.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from grukit.nn import backends

INPUT_KINDS = ("plain", "packed", "lengths", "unbatched")


@dataclass(frozen=True)
class Case:
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    kind: str      # one of INPUT_KINDS
    h0: bool

    @property
    def id(self) -> str:
        return (f"L{self.num_layers}-{'bi' if self.bidirectional else 'uni'}-{'bf' if self.batch_first else 'tf'}"
                f"-{'b' if self.bias else 'nob'}-{self.kind}-{'h0' if self.h0 else 'noh0'}")


TORCH_CASES = [Case(*c) for c in itertools.product((1, 2, 3), (False, True), (False, True), (True, False),
                                                   INPUT_KINDS, (True, False))]

# the extras torch lacks, alone and combined (kwargs of grukit.nn.GRU)
EXTRAS = {
    "cho": dict(reset_after=False),
    "layer_norm": dict(layer_norm=True),
    "recurrent_dropout": dict(recurrent_dropout=0.3),
    "zoneout": dict(zoneout=0.2),
    "cho+ln": dict(reset_after=False, layer_norm=True),
    "all": dict(reset_after=False, layer_norm=True, recurrent_dropout=0.3, zoneout=0.2),
    "after+all": dict(layer_norm=True, recurrent_dropout=0.3, zoneout=0.2),
}


def all_backends() -> list[str]:
    return backends.available()
