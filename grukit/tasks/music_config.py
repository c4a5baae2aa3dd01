"""MusicConfig: polyphonic music modelling options (torch-free; read by the CLI at start-up)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import TaskConfig, choice, opt

__all__ = ["MusicConfig"]


@dataclass
class MusicConfig(TaskConfig):
    """A GRU over piano-roll frames with independent Bernoulli outputs per pitch (Chung et al. 2014) or a
    NADE over the notes of each frame (Boulanger-Lewandowski et al. 2012)."""

    data: str = opt("", "a Boulanger-Lewandowski .mat file (train/valid/test splits), a MIDI file or folder, or "
                        "the built-in set bach_chorales (music21)")
    # ---- piano roll
    low_pitch: int = opt(21, "lowest MIDI pitch modelled (21 = A0)")
    high_pitch: int = opt(108, "highest MIDI pitch modelled, inclusive (108 = C8; 21-108 = the 88 piano keys)")
    quantize: str = opt("beats", "MIDI input: beats (frames_per_beat per beat, follows tempo) or time (fs per "
                                 "second)")
    frames_per_beat: int = opt(4, "frames per beat (quarter note) for quantize=beats and the chorales")
    fs: float = opt(8.0, "frames per second for quantize=time")
    out_of_range: str = opt("drop", "notes outside the pitch range: drop, or fold (move by octaves into it)")
    drums: bool = opt(False, "include drum tracks of MIDI files")
    programs: tuple[int, ...] = opt((), "keep only these General MIDI programs 0-127 (empty: every non-drum "
                                        "instrument)")
    max_files: int = opt(0, "read at most this many MIDI files / chorales (0 = all)")
    test_fraction: float = opt(0.1, "MIDI folders and chorales: fraction of pieces held out for the test set "
                                    "(.mat files have their own split)")
    # ---- model
    output: str = opt("bernoulli", "frame distribution: bernoulli (independent per pitch, Chung et al. 2014) "
                                   "or nade (autoregressive over the pitches of a frame)")
    nade_hidden: int = opt(32, "hidden units of the NADE output (output=nade)")
    input_dropout: float = opt(0.0, "dropout on the input frames (training)")
    hidden_size: int = opt(128, "GRU units per layer")
    head_dropout: float = opt(0.3, "dropout on the GRU outputs entering the output distribution")
    # ---- training
    chunk: int = opt(200, "training windows of this many frames (the state restarts at each); 0 = whole "
                          "pieces. Evaluation always reads whole pieces")
    max_epochs: int = opt(200, "upper bound on training epochs")
    patience: int = opt(10, "early stopping patience in epochs (validation NLL)")
    batch_size: int = opt(32, "training windows per batch")
    lr: float = opt(3e-3, "AdamW learning rate")
    val_fraction: float = opt(0.1, "MIDI folders and chorales: fraction of pieces held out for validation "
                                   "(.mat files have their own split)")

    tune_space: ClassVar[dict[str, Any]] = {   # `grukit tune music` search space
        "hidden_size": [64, 128, 256],
        "num_layers": [1, 2],
        "head_dropout": {"low": 0.0, "high": 0.5},
        "input_dropout": {"low": 0.0, "high": 0.3},
        "lr": {"low": 5e-4, "high": 1e-2, "log": True},
        "batch_size": [16, 32, 64],
    }

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "MusicConfig":
        """As :meth:`TaskConfig.from_dict`; the old ``time_limit`` option (runs and config files written before
        every task had ``max_minutes``) is read as ``max_minutes``."""
        values = dict(values)
        for old in ("time_limit", "time-limit"):
            if old in values:
                minutes = values.pop(old)
                values.setdefault("max_minutes", minutes)
        return super().from_dict(values, source)

    def problems(self) -> list[str]:
        p = super().problems()
        if not 0 <= self.low_pitch <= self.high_pitch <= 127:
            p.append(f"low_pitch={self.low_pitch}, high_pitch={self.high_pitch}: expected 0 <= low_pitch <= "
                     "high_pitch <= 127")
        choice(p, "quantize", self.quantize, ["beats", "time"])
        choice(p, "out_of_range", self.out_of_range, ["drop", "fold"])
        choice(p, "output", self.output, ["bernoulli", "nade"])
        if self.frames_per_beat < 1 or self.fs <= 0:
            p.append(f"frames_per_beat={self.frames_per_beat}, fs={self.fs}: expected frames_per_beat >= 1 and "
                     "fs > 0")
        if any(not 0 <= g <= 127 for g in self.programs):
            p.append(f"programs={list(self.programs)}: expected General MIDI programs in 0-127")
        if self.chunk < 0 or self.chunk == 1:
            p.append(f"chunk={self.chunk}: expected 0 (whole pieces) or >= 2 frames")
        if self.nade_hidden < 1 or self.max_files < 0:
            p.append(f"nade_hidden={self.nade_hidden}, max_files={self.max_files}: expected nade_hidden >= 1 and "
                     "max_files >= 0")
        if not 0 <= self.input_dropout < 1:
            p.append(f"input_dropout={self.input_dropout}: expected a probability in [0, 1)")
        if not 0 <= self.test_fraction < 1 or self.test_fraction + self.val_fraction >= 1:
            p.append(f"test_fraction={self.test_fraction}, val_fraction={self.val_fraction}: expected fractions "
                     "in [0, 1) that sum to less than 1")
        return p
