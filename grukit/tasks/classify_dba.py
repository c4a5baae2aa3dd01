r"""Synthetic training series by weighted DTW barycentre averaging (``dba_augment``).

Forestier et al. (2017, "Generating synthetic time series to augment sparse datasets", ICDM) average a class's
series under dynamic time warping with weights that favour one series and its nearest neighbours, so each
synthetic series is a plausible warped blend of real ones of its class; Ismail Fawaz et al. (2018, "Data
augmentation using synthetic data for time series classification with deep residual networks") doubled small
UCR training sets this way and found the largest gains where there are few series per class. Their "Average
Selected" weights, used here: for an anchor series of a class of n series, 0.5 on the anchor, 0.3 shared by
2 of its 5 nearest neighbours (DTW, drawn at random), 0.2 shared by the other n - 3 (renormalised where a class
has fewer series), then DBA (Petitjean et al. 2011) started from the anchor, with aeon's
``elastic_barycenter_average``. DTW is constrained to a Sakoe-Chiba band of ``window`` of the length (10%) to
keep the cost near-linear in the length.

Series are (T, F) arrays (the classifier's normalised inputs); a class whose series differ in length, or that
has a single series, is left as it is.
"""
from __future__ import annotations

import numpy as np

from .classify_baselines import keep_torch_threads

__all__ = ["average_selected_weights", "dba_series"]

NEIGHBOURS, CHOSEN = 5, 2               # Average Selected: 2 of the anchor's 5 nearest neighbours
WEIGHTS = (0.5, 0.3, 0.2)               # anchor, the chosen neighbours, the rest of the class


def average_selected_weights(dist: np.ndarray, anchor: int, rng: np.random.Generator) -> np.ndarray:
    """Weights (n,) summing to 1 for the series of one class given their DTW distances (n, n): 0.5 on
    ``anchor``, 0.3 split over 2 of its 5 nearest neighbours drawn at random, 0.2 over the rest (a share with
    nobody to take it is dropped and the weights renormalised)."""
    n = dist.shape[0]
    others = np.array([j for j in np.argsort(dist[anchor], kind="stable") if j != anchor])
    near = others[:min(NEIGHBOURS, n - 1)]
    chosen = rng.choice(near, size=min(CHOSEN, len(near)), replace=False)
    rest = np.setdiff1d(others, chosen)
    w = np.zeros(n)
    w[anchor] = WEIGHTS[0]
    w[chosen] = WEIGHTS[1] / len(chosen)
    if len(rest):
        w[rest] = WEIGHTS[2] / len(rest)
    return w / w.sum()


def dba_series(seqs: list[np.ndarray], y: np.ndarray, per_series: int, seed: int, window: float = 0.1,
               max_iters: int = 10) -> tuple[list[np.ndarray], np.ndarray]:
    """``per_series`` synthetic series per real one (each real series the anchor in turn), with its label:
    (list of (T, F) float32 arrays, labels (M,))."""
    from aeon.clustering.averaging import elastic_barycenter_average
    from aeon.distances import dtw_pairwise_distance
    rng = np.random.default_rng(seed)
    out, labels = [], []
    with keep_torch_threads():                              # aeon's numba kernels would raise torch's threads
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            if len(idx) < 2 or len({len(seqs[i]) for i in idx}) > 1:
                continue
            X = np.stack([seqs[i].T for i in idx]).astype(np.float64)           # (n, F, T), aeon's layout
            dist = dtw_pairwise_distance(X, window=window)                       # (n, n)
            for _ in range(per_series):
                for a in range(len(idx)):
                    w = average_selected_weights(dist, a, rng)
                    bary = elastic_barycenter_average(X, distance="dtw", max_iters=max_iters,
                                                      init_barycenter=X[a], weights=w, window=window,
                                                      random_state=int(rng.integers(2**31)))   # (F, T)
                    out.append(np.asarray(bary, np.float32).reshape(X.shape[1:]).T)         # (T, F)
                    labels.append(c)
    return out, np.asarray(labels, dtype=y.dtype)
