r"""Conformal calibration of forecast intervals: one scale per horizon step, fitted on the validation windows.

A quantile (or Gaussian) head learns its interval from the training windows, which it has also fitted, so the
interval it gives for unseen points is often too narrow or too wide (a global model over many series: M4 Weekly
covered 98% of the test points with a nominal 95%). Split conformal prediction fixes the coverage on data the
model was not trained on. For each validation target :math:`y` with point forecast :math:`p` and bounds
:math:`[l, u]` (encoded units), the score

.. math::  r = \max\Big(\frac{p - y}{p - l}, \frac{y - p}{u - p}, 0\Big)

is the factor by which the interval must be stretched (or shrunk, :math:`r < 1`) around :math:`p` to just cover
:math:`y`. The calibrated scale of horizon step :math:`h` is the :math:`\lceil (n + 1)\,c \rceil`-th smallest of
its :math:`n` scores (:math:`c` the nominal coverage), the finite-sample rule of split conformal prediction, and
every bound (and every quantile) moves to :math:`p + s_h (q - p)`. Scaling around the point keeps the quantiles
ordered and the point forecast unchanged; the encoding (scale, log, seasonal factors) is monotone, so coverage in
encoded units is coverage in the original units.

The validation windows (:func:`grukit.data.windows.split_origins`) forecast points no training window had as a
target, so the scores are those of unseen points. Early stopping also read them; with hundreds of series that
selection is mild, with one short series it is not, which is why ``calibrate=auto`` needs at least
:math:`2 / (1 - c)` scores per step (40 at 95%).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["nominal_coverage", "conformal_scales", "apply_scales", "MIN_SCORES_FACTOR", "MAX_SCALE"]

MIN_SCORES_FACTOR = 2.0        # calibrate=auto: at least this / (1 - coverage) scores per horizon step
WIDTH_FLOOR = 0.1              # half-widths below this share of the step's median count as this share
MAX_SCALE = 20.0               # a larger scale means the trained intervals carry no information: left as trained


def nominal_coverage(config) -> float | None:
    """The interval's nominal coverage (the outer quantiles' distance, or ``interval``), None without one."""
    if config.likelihood == "quantile" and len(config.quantiles) >= 2:
        return float(config.quantiles[-1] - config.quantiles[0])
    if config.likelihood == "gaussian":
        return float(config.interval)
    return None


def conformal_scales(point: np.ndarray, lo: np.ndarray, hi: np.ndarray, y: np.ndarray, coverage: float,
                     min_scores: int = 1) -> np.ndarray | None:
    """Per-horizon-step scales (H,) from validation forecasts ``point``/``lo``/``hi`` and targets ``y``, each
    (N, H, C), encoded units; None when a step has fewer than ``min_scores`` scores or too few for the
    finite-sample quantile (``ceil((n + 1) c) > n``)."""
    point, lo, hi, y = (np.asarray(a, dtype=np.float64) for a in (point, lo, hi, y))
    below, above = point - lo, hi - point                                        # (N, H, C), >= 0
    # a window whose interval collapsed must not set everyone's scale: half-widths are floored at a tenth of
    # the step's median half-width
    floor = np.maximum(WIDTH_FLOOR * np.median(np.concatenate([below, above], 0), axis=(0, 2)), 1e-12)
    below = np.maximum(below, floor[None, :, None])
    above = np.maximum(above, floor[None, :, None])
    r = np.where(y < point, (point - y) / below, (y - point) / above)            # (N, H, C), >= 0
    r = np.moveaxis(r, 1, 0).reshape(r.shape[1], -1)                            # (H, N*C)
    n = r.shape[1]
    k = math.ceil((n + 1) * coverage)
    if n < max(1, min_scores) or k > n:
        return None
    return np.sort(r, axis=1)[:, k - 1]


def apply_scales(out: dict[str, np.ndarray], scales) -> dict[str, np.ndarray]:
    """``out`` (decoded model outputs: ``point``, ``lo``, ``hi`` (N, H, C), ``quantiles`` (N, H, C, Q)) with every
    bound moved to ``point + s_h (bound - point)``; a new dict, ``point`` unchanged."""
    s = np.asarray(scales, dtype=np.float64)
    p = out["point"]
    res = dict(out)
    for k in ("lo", "hi"):
        if k in out:
            res[k] = p + s[None, :, None] * (out[k] - p)
    if "quantiles" in out:
        res["quantiles"] = p[..., None] + s[None, :, None, None] * (out["quantiles"] - p[..., None])
    return res
