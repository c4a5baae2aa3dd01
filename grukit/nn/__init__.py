"""grukit.nn: the GRU engine."""
from . import backends, equations
from .gru import GRU, GRUCell, check_finite
from .spec import GRUSpec

__all__ = ["GRU", "GRUCell", "GRUSpec", "backends", "equations", "check_finite"]
