"""Every streaming session's recurrent state in one batched tensor per layer: a session owns a slot (a row).

A tick gathers its sessions' rows with one ``index_select`` and writes the new state back with one
``index_copy_``, per GRU (state ``(L, slots, H)``) and per layer of the speech front end (the last k-1 inputs
``(slots, C, k-1)`` and the inputs seen ``(slots,)``). Kept per session, as separate ``(L, 1, H)`` tensors
and ``(1, C, k-1)`` tails, every tick joined them with one ``torch.cat`` of a few hundred small tensors and
split them again, per layer and per ensemble member: ~30% of a 256-session speech tick (py-spy, 2-core
machine), more than the GRU itself.

A new slot is zero (a session starts from a zero state, as a whole-sequence forward does); a closed
session's slot is reused; the buffers double when the slots run out (their rows copied, so the state of
open sessions is kept).
"""
from __future__ import annotations

import threading
import weakref

import torch

__all__ = ["Slots"]


class Slots:
    """A run's slot table: ``alloc()`` a row, ``free(row)``; ``gru(member, L, H)`` and ``conv(layer, C, k)``
    the batched state buffers (made on first use, zero rows for every slot)."""

    def __init__(self, capacity: int = 64):
        self.capacity = max(1, int(capacity))
        self._free = list(range(self.capacity - 1, -1, -1))        # popped from the end: low rows first
        self._gru: dict[int, torch.Tensor] = {}                    # member -> (L, capacity, H)
        self._conv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # layer -> ((cap, C, k-1), (cap,))
        self._lock = threading.RLock()    # the free rows; re-entrant: a collection inside alloc() may run a
                                          # dropped session's finalizer (free()) on the same thread
        self.busy = threading.Lock()      # held by a tick while it uses the buffers: they are never
                                          # replaced (grown) under a tick running on the worker thread

    # ---- rows
    def alloc(self, owner: object | None = None) -> tuple[int, weakref.finalize | None]:
        """A free row, zeroed, and with ``owner`` its release: a ``weakref.finalize`` that frees the row once,
        when called (the session's close) or when the owner is garbage collected (a session never closed, as
        in a test), whichever comes first, so a row reused by another session is never freed twice."""
        while True:
            with self._lock:
                if self._free:
                    row = self._free.pop()
                    for h in self._gru.values():
                        h[:, row].zero_()
                    for tail, seen in self._conv.values():
                        tail[row].zero_()
                        seen[row] = 0
                    break
            # full: grow, first waiting for a running tick (busy) and only then taking the row lock. A tick
            # holds busy and may free a row (a dropped session's finalizer, run by a collection on its thread),
            # so waiting for busy while holding the row lock could deadlock the two threads
            with self.busy, self._lock:
                if not self._free:
                    self._grow()
        return row, (weakref.finalize(owner, self.free, row) if owner is not None else None)

    def free(self, row: int) -> None:
        """Return ``row`` to the table."""
        with self._lock:
            self._free.append(row)

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)

    def _grow(self) -> None:
        old, self.capacity = self.capacity, self.capacity * 2
        self._free = list(range(self.capacity - 1, old - 1, -1))
        for k, h in self._gru.items():
            new = h.new_zeros(h.shape[0], self.capacity, h.shape[2])
            new[:, :old] = h
            self._gru[k] = new
        for k, (tail, seen) in self._conv.items():
            t = tail.new_zeros(self.capacity, *tail.shape[1:])
            t[:old] = tail
            s = seen.new_zeros(self.capacity)
            s[:old] = seen
            self._conv[k] = (t, s)

    # ---- state buffers
    def gru_row(self, member: int, row: int) -> torch.Tensor | None:
        """Row ``row`` of member ``member``'s GRU state, ``(L, 1, H)`` (a view), or None before any GRU ran."""
        h = self._gru.get(member)
        return None if h is None else h[:, row:row + 1]

    def gru(self, member: int, layers: int, hidden: int, like: torch.Tensor) -> torch.Tensor:
        """The ``(L, capacity, H)`` GRU state of ensemble member ``member`` (made, zero, on first use; made
        again, zero, if a GRU of another shape asks for it)."""
        h = self._gru.get(member)
        if h is None or h.shape[0] != layers or h.shape[2] != hidden or h.dtype != like.dtype:
            h = self._gru[member] = like.new_zeros(layers, self.capacity, hidden)
        return h

    def conv(self, layer: int, channels: int, kernel: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``layer`` of the front end: its last ``kernel - 1`` inputs ``(capacity, C, k-1)`` and the
        inputs it has seen ``(capacity,)`` (int64)."""
        st = self._conv.get(layer)
        if st is None or st[0].shape[1:] != (channels, kernel - 1):
            st = self._conv[layer] = (like.new_zeros(self.capacity, channels, kernel - 1),
                                      torch.zeros(self.capacity, dtype=torch.long))
        return st
