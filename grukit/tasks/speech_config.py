"""SpeechConfig: options of ``grukit train speech`` (torch-free: the CLI reads it at start-up)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import TaskConfig, choice, opt

__all__ = ["SpeechConfig"]


@dataclass
class SpeechConfig(TaskConfig):
    """Speech recognition: conv front end, (bi)GRU stack, per-frame CTC outputs, greedy or beam decoding."""

    data: str = opt("", "CSV/TSV manifest (path, transcript), or a folder of FSDD-style single-word files "
                        "(label_speaker_index.wav) from which multi-word utterances are built")
    test_data: str = opt("", "held-out manifest (FSDD-style folders use their official split, or "
                             "--test-speaker)")
    test_speaker: str = opt("", "FSDD-style folders: hold out this speaker's recordings as the test set "
                                "(empty: the official split, recordings 0-4 of every speaker)")
    allow_outside: bool = opt(False, "manifests: allow audio paths outside the manifest's folder")
    # ---- features
    features: str = opt("logmel", "acoustic features: logmel or mfcc")
    sample_rate: int = opt(0, "sample rate features are computed at; files at other rates are resampled "
                              "(0: the first file's rate)")
    n_mels: int = opt(40, "mel bands")
    n_mfcc: int = opt(13, "cepstral coefficients (features=mfcc)")
    win_ms: float = opt(25.0, "analysis window in milliseconds")
    hop_ms: float = opt(10.0, "frame step in milliseconds")
    normalize: str = opt("global", "feature normalisation: global (training mean/std; streams), utterance "
                                   "(each utterance its own; not for --stream), none")
    resample: bool = opt(True, "resample files at another rate (False: such files are an error)")
    clip_fraction: float = opt(1e-3, "reject files with more than this fraction of full-scale samples")
    specaugment: bool = opt(True, "SpecAugment masking of feature bands and time spans in training")
    freq_mask: int = opt(6, "SpecAugment: widest masked band (features)")
    time_mask: int = opt(8, "SpecAugment: longest masked span (frames)")
    # ---- built utterances (FSDD-style folders)
    words_min: int = opt(3, "built utterances: fewest words")
    words_max: int = opt(7, "built utterances: most words")
    n_train_utterances: int = opt(2400, "built utterances from training recordings (validation included)")
    n_test_utterances: int = opt(500, "built utterances from test recordings")
    # ---- model
    units: str = opt("char", "output units: char (letters, space) or word (each word one symbol)")
    conv_channels: int = opt(128, "channels of the causal convolutional front end (0: no front end)")
    conv_layers: int = opt(2, "convolution layers in the front end")
    conv_stride: int = opt(3, "time subsampling of the front end (applied by its first layer)")
    hidden_size: int = opt(128, "GRU units per layer and direction")
    num_layers: int = opt(2, "stacked GRU layers")
    decoder: str = opt("greedy", "CTC decoding for evaluate/transcribe: greedy or beam")
    beam_size: int = opt(8, "beam width for decoder=beam")
    # ---- optimisation
    batch_size: int = opt(16, "utterances per batch")
    lr: float = opt(3e-3, "AdamW learning rate")
    lr_schedule: str = opt("cosine", "learning-rate schedule: none, plateau, cosine (over max_epochs)")
    max_epochs: int = opt(24, "upper bound on training epochs")
    patience: int = opt(8, "early stopping patience in epochs")
    val_fraction: float = opt(0.1, "fraction of training utterances held out for validation")

    tune_space: ClassVar[dict[str, Any]] = {   # `grukit tune speech` search space
        "hidden_size": [64, 128, 256],
        "num_layers": [1, 2, 3],
        "conv_channels": [64, 128],
        "dropout": {"low": 0.0, "high": 0.3},
        "lr": {"low": 5e-4, "high": 1e-2, "log": True},
        "batch_size": [8, 16, 32],
    }

    def problems(self) -> list[str]:
        p = super().problems()
        choice(p, "features", self.features, ["logmel", "mfcc"])
        choice(p, "normalize", self.normalize, ["global", "utterance", "none"])
        choice(p, "units", self.units, ["char", "word"])
        choice(p, "decoder", self.decoder, ["greedy", "beam"])
        if not 1 <= self.words_min <= self.words_max:
            p.append(f"words_min={self.words_min}, words_max={self.words_max}: expected 1 <= min <= max")
        if self.conv_channels < 0 or self.conv_layers < 1 or self.conv_stride < 1 or self.beam_size < 1:
            p.append("conv_channels >= 0, conv_layers >= 1, conv_stride >= 1 and beam_size >= 1 are required")
        if self.n_train_utterances < 2 or self.n_test_utterances < 1:
            p.append("n_train_utterances >= 2 and n_test_utterances >= 1 are required")
        if self.sample_rate < 0 or self.n_mels < 1 or self.hop_ms <= 0 or self.win_ms < self.hop_ms:
            p.append(f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, win_ms={self.win_ms}, "
                     f"hop_ms={self.hop_ms}: expected sample_rate >= 0, n_mels >= 1, win_ms >= hop_ms > 0")
        return p
