"""Utterance sets for the speech task: a manifest's rows or multi-word utterances built from a folder of
single-word recordings, their features, and CTC datasets (features + padded label ids). Reading and features
themselves are in :mod:`grukit.data.audio`; the vocabulary is :class:`grukit.data.text.Vocab`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from . import audio
from .batching import DictDataset
from .text import Vocab

__all__ = ["feature_spec", "read_kw", "utterances", "featurise", "ctc_dataset", "run_features", "audio_inputs"]


def feature_spec(cfg, rate: int) -> audio.FeatureSpec:
    """The features of ``cfg`` (a SpeechConfig) at ``rate`` Hz; a ConfigError lists what is wrong."""
    spec = audio.FeatureSpec(kind=cfg.features, rate=rate, n_mels=cfg.n_mels, n_mfcc=cfg.n_mfcc,
                             win_ms=cfg.win_ms, hop_ms=cfg.hop_ms)
    if spec.problems():
        raise ConfigError("; ".join(spec.problems()))
    return spec


def read_kw(cfg) -> dict[str, Any]:
    """Keyword arguments of :func:`grukit.data.audio.read_audio` from the config."""
    return {"resample": cfg.resample, "clip_fraction": cfg.clip_fraction}


def utterances(cfg, split: str, data: str | None = None, rate: int = 0
               ) -> tuple[list[audio.Utterance], str, int]:
    """(utterances, display name, sample rate): a manifest's rows, or utterances built from a word folder.

    ``rate`` 0 takes ``cfg.sample_rate``, else the first file's rate.
    """
    src = data or (cfg.data if split == "train" or not cfg.test_data else cfg.test_data)
    path, opts = audio.parse_source(src)
    if audio.parse_source(src)[0].is_dir():                              # a word folder
        words, _ = audio.read_labelled(src, "all")
        pool = audio.split_utterances(words, split, opts, str(path))
        rate = rate or cfg.sample_rate or audio.file_rate(words[0].path)
        for u in pool:                                                      # check (and cache) every file
            audio.load(u, rate, **read_kw(cfg))
        n = cfg.n_train_utterances if split == "train" else cfg.n_test_utterances
        seed = cfg.seed if split == "train" else cfg.seed + 7919            # test strings: their own seed
        built = audio.concat_utterances(pool, n, rate, min_words=cfg.words_min, max_words=cfg.words_max,
                                        seed=seed)
        return built, f"{path} ({split}: {n} utterances of {cfg.words_min}-{cfg.words_max} words)", rate
    utts, _ = audio.read_labelled(src, "all")
    return utts, str(path), rate or cfg.sample_rate or audio.file_rate(utts[0].path)


def featurise(utts: list[audio.Utterance], spec: audio.FeatureSpec, cfg) -> list[np.ndarray]:
    """(T_i, F) features of each utterance (read, resampled and checked as ``cfg`` says)."""
    return [audio.features(audio.load(u, spec.rate, **read_kw(cfg)), spec) for u in utts]


def ctc_dataset(feats, texts, vocab: Vocab, max_target: int | None = None) -> DictDataset:
    """Features with padded CTC targets: items ``{x (T, F), lengths, y (S,), target_lengths}``."""
    ids = [vocab.labels(t) for t in texts]
    S = max_target or max(1, max(len(i) for i in ids))
    y = np.zeros((len(ids), S), dtype=np.int64)                             # (N, S) padded targets
    for i, t in enumerate(ids):
        y[i, : len(t)] = t[:S]
    return DictDataset(x=feats, lengths=np.array([len(f) for f in feats]), y=y,
                       target_lengths=np.array([min(len(t), S) for t in ids]))


def run_features(meta, cfg, utts) -> list[np.ndarray]:
    """Features of ``utts`` as a trained run computes them: its feature spec and its normalisation."""
    spec = audio.FeatureSpec.from_dict(meta["features"])
    feats = featurise(utts, spec, cfg)
    return audio.normalise(feats, cfg.normalize, meta["feature_mean"], meta["feature_std"])


def audio_inputs(data: str) -> list[audio.Utterance]:
    """What to transcribe: one audio file, or the utterances of a folder or manifest (its test split if any)."""
    p, _ = audio.parse_source(data)
    if p.is_file() and p.suffix.lower() in audio.AUDIO_EXTENSIONS:
        return [audio.Utterance(str(p), "")]
    return audio.read_labelled(data, "all")[0] if not audio.has_split(data) else \
        audio.read_labelled(data, "test")[0]
