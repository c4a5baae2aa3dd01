"""The small task behind the scikit-learn estimators: GRU -> pooling -> linear (module-level, so it pickles)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SequenceTask
from .heads import Pooling

__all__ = ["EstimatorTask"]


class EstimatorTask(SequenceTask):
    """MSE loss for regression, cross-entropy for classification (``meta["kind"]``)."""

    task_name = "estimator"

    def build_head(self):
        self.pool = Pooling(self.meta["pooling"], self.encoder_size, self.config.bidirectional)
        return nn.Linear(self.encoder_size, int(self.meta["out_size"]))

    def readout(self, seq, h_n, inputs):
        return self.head(self.pool(seq, h_n, inputs.get("lengths")))          # (B, out)

    def loss(self, outputs, target, inputs):
        if self.meta["kind"] == "classification":
            return F.cross_entropy(outputs, target.long())
        return F.mse_loss(outputs, target.to(outputs.dtype))

    def decode(self, outputs, inputs=None):
        """Class probabilities (B, K) for classification (what ``classify_sequences`` averages over members),
        the standardised values (B, out) for regression."""
        return torch.softmax(outputs, -1) if self.meta["kind"] == "classification" else outputs
