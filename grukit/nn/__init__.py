"""grukit.nn: the GRU engine."""
from . import backends, equations
from .gru import GRU, GRUCell, check_finite, frozen_weights
from .mingru import MinGRU
from .spec import GRUSpec
from .stream import GRUStream

__all__ = ["GRU", "GRUCell", "MinGRU", "GRUSpec", "GRUStream", "backends", "equations", "check_finite",
           "frozen_weights"]
