"""Batches as dicts of tensors: ``{"x": (B, T, F), "lengths": (B,), "y": ...}``; padding with lengths.

Variable-length sequences are padded to the longest in the batch and always travel with ``lengths``, which
the GRU uses so padding never enters a state (``grukit.nn.GRU(..., lengths=)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError

__all__ = ["Prepared", "DictDataset", "pad_sequences", "collate", "loader", "EpochShuffle", "RankStreams"]


@dataclass
class Prepared:
    """What a task's ``prepare(config)`` returns."""

    train: DataLoader                      # training batches
    val: DataLoader | None                 # validation batches (early stopping), or None
    meta: dict[str, Any]                   # JSON-able: sizes, scalers, class names; saved as meta.json
    extra: dict[str, Any] = field(default_factory=dict)   # anything evaluate() may reuse in-process


class DictDataset(Dataset):
    """Rows of named arrays: item i is ``{name: array[i]}``; ragged arrays (lists) allowed."""

    def __init__(self, **arrays):
        n = {len(v) for v in arrays.values()}
        if len(n) != 1:
            raise ValueError(f"arrays of different lengths: { {k: len(v) for k, v in arrays.items()} }")
        self.arrays = arrays
        self.n = n.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.arrays.items()}


def pad_sequences(seqs: Sequence[np.ndarray], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (T_i, F) arrays into (B, T_max, F) float32 and (B,) int64 lengths."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    T = int(lengths.max()) if len(seqs) else 0
    F = seqs[0].shape[-1] if len(seqs) else 0
    out = torch.full((len(seqs), T, F), value, dtype=torch.float32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.float32)
    return out, lengths


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """THE collate of every task: stack dict items; ragged sequences (``x`` and any other key whose items
    differ in length, such as music's target rolls) are padded, and ``x`` gets ``lengths`` (given lengths
    are kept)."""
    out: dict[str, torch.Tensor] = {}
    keys = items[0].keys()
    for k in keys:
        vals = [it[k] for it in items]
        if np.ndim(vals[0]) > 0 and len({np.shape(v)[0] for v in vals}) > 1:
            out[k], lens = pad_sequences(vals)                      # (B, T_max, F), (B,)
            if k == "x":
                out.setdefault("lengths", lens)
            continue
        arr = np.stack([np.asarray(v) for v in vals])
        t = torch.from_numpy(arr)
        if t.is_floating_point():
            t = t.float()
        out[k] = t
    if "lengths" in out and "x" in out:
        T = int(out["lengths"].max())
        out["x"] = out["x"][:, :T]                                   # (B, T_max, F): trim shared padding
    return out


class EpochShuffle(torch.utils.data.Sampler):
    """A random order that depends only on ``(seed, epoch)``, so a resumed run sees the batches it would have.

    Lightning calls ``set_epoch`` before every epoch (as for ``DistributedSampler``).
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
           seed: int = 0) -> DataLoader:
    """Batches of ``dataset``; shuffled with :class:`EpochShuffle` (reproducible across resumes) if asked."""
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
                      sampler=EpochShuffle(len(dataset), seed) if shuffle else None,
                      persistent_workers=num_workers > 0)


class RankStreams(torch.utils.data.IterableDataset):
    """The windows of a :class:`grukit.data.text.StreamBatches`, in order, restricted under DDP to this rank's share of the
    streams (rank r of W reads streams ``[r*B/W, (r+1)*B/W)``), so every rank carries its state across
    consecutive windows and the W ranks together see the same global batch as one process. (Lightning's
    DistributedSampler would hand each rank every W-th *window*, breaking the state carrying; an iterable
    dataset is left alone.)"""

    def __init__(self, batches, even: bool = True) -> None:
        self.batches, self.even = batches, even                        # even: equal shares (training)

    def __len__(self) -> int:
        return len(self.batches)

    def rows(self) -> slice:
        import torch.distributed as dist
        B = self.batches.data.shape[0]
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return slice(0, B)
        W, r = dist.get_world_size(), dist.get_rank()
        if B % W if self.even else B < W:
            raise ConfigError(f"{B} parallel streams cannot be shared {'evenly ' if self.even else ''}by {W} DDP "
                              f"processes; use a {'batch_size' if self.even else 'eval_batch_size'} "
                              f"{'divisible by' if self.even else 'of at least'} {W}")
        return slice(r * B // W, (r + 1) * B // W)

    def __iter__(self) -> Iterator[dict]:
        rows = self.rows()
        for b in self.batches:
            yield {"x": b["x"][rows], "y": b["y"][rows]}               # (B/W, T) each
