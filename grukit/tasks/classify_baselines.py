"""Classification baselines scored on the same train/test split as the GRU: the majority class, MiniRocket
(Dempster et al. 2021) and 1-nearest-neighbour DTW, both from aeon, fitted the way aeon documents them.

Sequences are lists of (T_i, F) arrays in raw units (UCR/UEA sets ship z-normalised already). aeon wants
(N, F, T) collections: MiniRocket needs one length, so unequal-length sets are linearly resampled to the
longest training length (at least 9 steps, MiniRocket's kernel span); 1-NN DTW takes the sequences as they are.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager

import numpy as np

__all__ = ["BASELINES", "to_panel", "majority", "minirocket", "dtw_1nn", "fit_predict", "dtw_cells", "keep_torch_threads"]

DTW_MAX_CELLS = 5e10   # 1-NN DTW fills N_train * N_test * T^2 cells; above this (minutes on one core) it is skipped


def to_panel(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """(N, F, length) float64: every (T_i, F) sequence linearly resampled to ``length`` steps."""
    out = np.empty((len(seqs), seqs[0].shape[1], length))
    grid = np.linspace(0.0, 1.0, length)
    for i, s in enumerate(seqs):
        if len(s) == length:
            out[i] = s.T
            continue
        src = np.linspace(0.0, 1.0, len(s)) if len(s) > 1 else np.zeros(1)
        for f in range(s.shape[1]):
            out[i, f] = np.interp(grid, src, s[:, f])
    return out


def majority(y_train: np.ndarray, test_seqs: list) -> np.ndarray:
    """The most frequent training label for every test sequence (ties: the first in sorted order)."""
    labels, counts = np.unique(y_train, return_counts=True)
    return np.full(len(test_seqs), labels[np.argmax(counts)])


def minirocket(train_seqs, y_train, test_seqs, seed: int = 0) -> np.ndarray:
    """aeon's MiniRocketClassifier (10,000 kernels, ridge classifier with built-in CV)."""
    from aeon.classification.convolution_based import MiniRocketClassifier
    length = max(9, max(len(s) for s in train_seqs))
    clf = MiniRocketClassifier(random_state=seed, n_jobs=1)
    clf.fit(to_panel(train_seqs, length), y_train)
    return np.asarray(clf.predict(to_panel(test_seqs, length)))


def _collection(seqs):
    if len({len(s) for s in seqs}) == 1:
        return np.stack([s.T for s in seqs]).astype(np.float64)            # (N, F, T)
    return [np.ascontiguousarray(s.T, dtype=np.float64) for s in seqs]      # unequal: list of (F, T_i)


def dtw_1nn(train_seqs, y_train, test_seqs, seed: int = 0) -> np.ndarray:  # noqa: ARG001 - deterministic
    """aeon's KNeighborsTimeSeriesClassifier with one neighbour and full-window DTW."""
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    clf = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw", n_jobs=1)
    train, test = _collection(train_seqs), _collection(test_seqs)
    if isinstance(train, list) != isinstance(test, list):                    # aeon wants one kind for both
        train, test = [np.asarray(s) for s in train], [np.asarray(s) for s in test]
    clf.fit(train, y_train)
    return np.asarray(clf.predict(test))


def dtw_cells(train_seqs, test_seqs) -> float:
    """DTW matrix cells 1-NN DTW fills (its cost)."""
    t_train = float(np.mean([len(s) for s in train_seqs]))
    t_test = float(np.mean([len(s) for s in test_seqs]))
    return len(train_seqs) * len(test_seqs) * t_train * t_test


BASELINES = {"minirocket": minirocket, "dtw": dtw_1nn}
NAMES = {"minirocket": "minirocket", "dtw": "dtw_1nn"}


def fit_predict(names, train_seqs, y_train, test_seqs, seed: int = 0, log=print
                ) -> dict[str, tuple[np.ndarray, float]]:
    """{row name: (predicted labels, seconds to fit and predict)} for the majority class and ``names``."""
    t0 = time.perf_counter()
    out = {"majority_class": (majority(y_train, test_seqs), time.perf_counter() - t0)}
    for name in names:
        if name == "dtw" and dtw_cells(train_seqs, test_seqs) > DTW_MAX_CELLS:
            log(f"1-NN DTW skipped: {dtw_cells(train_seqs, test_seqs):.2g} DTW cells (over {DTW_MAX_CELLS:.0g}, "
                "minutes on one core); pass --baselines minirocket to silence this")
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings(), keep_torch_threads():
            warnings.simplefilter("ignore")
            pred = BASELINES[name](train_seqs, y_train, test_seqs, seed)
        out[NAMES[name]] = (pred, time.perf_counter() - t0)
    return out


@contextmanager
def keep_torch_threads():
    """Restore torch's intra-op thread count on exit. aeon's numba kernels start numba's OpenMP threading layer,
    which raises the OpenMP thread count that torch reads (1 -> the number of cores under OMP_NUM_THREADS=1):
    a model trained after a baseline in the same process (the suite, ``grukit tune``) then ran on threads it was
    not given, spinning against other work (6x the CPU time per step on the loaded 2-core machine)."""
    import torch
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
