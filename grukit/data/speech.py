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

__all__ = ["feature_spec", "read_kw", "source_options", "utterances", "featurise", "ctc_dataset", "run_features", "audio_inputs"]


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


def source_options(cfg) -> dict[str, str]:
    """The audio-source options set as config fields (``test_speaker``, ``allow_outside``); they override the
    same options given in ``--data``'s query string."""
    out = {}
    if getattr(cfg, "test_speaker", ""):
        out["test_speaker"] = cfg.test_speaker
    if getattr(cfg, "allow_outside", False):
        out["allow_outside"] = "1"
    return out


def utterances(cfg, split: str, data: str | None = None, rate: int = 0
               ) -> tuple[list[audio.Utterance], str, int]:
    """(utterances, display name, sample rate): a manifest's rows, or utterances built from a word folder.

    ``rate`` 0 takes ``cfg.sample_rate``, else the first file's rate.
    """
    src = data or (cfg.data if split == "train" or not cfg.test_data else cfg.test_data)
    path, _ = audio.parse_source(src)
    if path.is_dir():                                                       # a word folder
        words, opts = audio.read_labelled(src, "all", source_options(cfg))
        pool = audio.split_utterances(words, split, opts, str(path))
        rate = rate or cfg.sample_rate or audio.file_rate(words[0].path)
        for u in pool:                                                      # check (and cache) every file
            audio.load(u, rate, **read_kw(cfg))
        n = cfg.n_train_utterances if split == "train" else cfg.n_test_utterances
        seed = cfg.seed if split == "train" else cfg.seed + 7919            # test strings: their own seed
        built = audio.concat_utterances(pool, n, rate, min_words=cfg.words_min, max_words=cfg.words_max,
                                        seed=seed)
        return built, f"{path} ({split}: {n} utterances of {cfg.words_min}-{cfg.words_max} words)", rate
    utts, _ = audio.read_labelled(src, "all", source_options(cfg))
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


def audio_inputs(data: str, cfg=None) -> list[audio.Utterance]:
    """What to transcribe: one audio file, or the utterances of a folder or manifest (its test split if any;
    ``cfg``'s source options apply)."""
    p, _ = audio.parse_source(data)
    if p.is_file() and p.suffix.lower() in audio.AUDIO_EXTENSIONS:
        return [audio.Utterance(str(p), "")]
    opts = source_options(cfg) if cfg is not None else {}
    return audio.read_labelled(data, "test" if audio.has_split(data, opts) else "all", opts)[0]
