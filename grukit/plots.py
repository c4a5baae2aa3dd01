"""Matplotlib PNGs: loss curves, forecasts, confusion matrices, anomaly scores, piano rolls. Written
atomically."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import atomic_write

__all__ = ["figure", "save_png", "loss_curve", "forecast_plot", "confusion_matrix_plot", "anomaly_plot",
           "roll_png"]


def figure(nrows: int = 1, ncols: int = 1, size=(9, 4)):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    return fig, axes


def save_png(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def loss_curve(metrics_csv: str | Path, path: str | Path) -> Path:
    """Training and validation loss per epoch from Lightning's metrics.csv."""
    import pandas as pd
    df = pd.read_csv(metrics_csv)
    fig, axes = figure(size=(7, 4))
    ax = axes[0, 0]
    for col, label in (("train_loss_epoch", "train"), ("val_loss", "validation")):
        if col in df.columns:
            d = df[["epoch", col]].dropna()
            ax.plot(d["epoch"], d[col], marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def _axis(times, n: int):
    return np.arange(n) if times is None else np.asarray(times)[:n]


def forecast_plot(items: Sequence[tuple[str, Any, np.ndarray, int, dict]], target_names: Sequence[str],
                  path: str | Path, title: str = "", future_times: bool = False) -> Path:
    """One panel per (series, target): history, actuals after the origin, forecast and its interval.

    ``items``: (series id, times or None, values (n, C), origin, forecast dict of (H, C) arrays).
    """
    from .data.timeseries import future_times as extend
    panels = [(sid, t, y, o, fc, c) for sid, t, y, o, fc in items for c in range(y.shape[1])][:6]
    fig, axes = figure(len(panels), 1, size=(9, 3.2 * len(panels)))
    for ax, (sid, times, y, origin, fc, c) in zip(axes[:, 0], panels):
        H = fc["point"].shape[0]
        x_hist = _axis(times, origin)
        if times is None:
            x_fc = np.arange(origin, origin + H)
        elif future_times or len(times) < origin + H:
            import pandas as pd
            x_fc = np.asarray(extend(pd.Series(times).iloc[:origin], H))
        else:
            x_fc = np.asarray(times)[origin:origin + H]
        ax.plot(x_hist, y[:origin, c], color="0.3", lw=1.2, label="history")
        if not future_times and len(y) > origin:
            ax.plot(x_fc[: len(y) - origin], y[origin:origin + H, c], color="black", lw=1.5, marker=".",
                    label="actual")
        ax.plot(x_fc, fc["point"][:, c], color="C1", lw=1.8, label="forecast")
        if "lo" in fc:
            ax.fill_between(x_fc, fc["lo"][:, c], fc["hi"][:, c], color="C1", alpha=0.25, label="interval")
        name = target_names[c] if c < len(target_names) else f"target {c}"
        ax.set_title(f"{title} {'' if sid == 'series' else sid} {name}".strip())
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    return save_png(fig, path)


def confusion_matrix_plot(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Counts with row-normalised colour; true label on rows, prediction on columns."""
    k = len(labels)
    fig, axes = figure(size=(1.0 + 0.55 * k + 2, 0.55 * k + 2))
    ax = axes[0, 0]
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    return save_png(fig, path)


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def anomaly_plot(values: np.ndarray, scores: np.ndarray, threshold: float, flagged: np.ndarray,
                 path: str | Path, labels: np.ndarray | None = None, times=None, title: str = "") -> Path:
    """Series with flagged regions shaded (red) and labelled anomalies (green); scores and threshold below."""
    x = _axis(times, len(values))
    fig, axes = figure(2, 1, size=(11, 5.5))
    ax, ax2 = axes[0, 0], axes[1, 0]
    v = values if values.ndim == 2 else values[:, None]
    for j in range(min(v.shape[1], 5)):
        ax.plot(x, v[:, j], lw=0.8)
    for a, b in _spans(flagged):
        ax.axvspan(x[a], x[b - 1], color="red", alpha=0.25, lw=0)
    if labels is not None:
        for a, b in _spans(labels.astype(bool)):
            ax.axvspan(x[a], x[b - 1], color="green", alpha=0.3, lw=0)
    ax.set_title(title or "flagged (red) and labelled (green) anomalies")
    ax2.plot(x, scores, lw=0.8, color="C3")
    ax2.axhline(threshold, color="black", ls="--", lw=1, label="threshold")
    ax2.set_ylabel("anomaly score")
    ax2.legend(loc="upper left", fontsize=8)
    return save_png(fig, path)


def roll_png(path: str | Path, panels: list[tuple[str, np.ndarray]], low_pitch: int = 21,
             frame_seconds: float | None = None, split_at: int | None = None) -> Path:
    """Piano-roll PNG: one panel per ``(title, roll (T, P))`` (0/1 or probabilities); a line at ``split_at``."""
    fig, axes = figure(len(panels), 1, size=(10, 2.6 * len(panels) + 0.4))
    for ax, (title, roll) in zip(axes[:, 0], panels):
        roll = np.asarray(roll, dtype=float)
        nz = np.flatnonzero(roll.max(0) > 0.05) if roll.size else np.array([])
        lo, hi = (max(0, nz.min() - 2), min(roll.shape[1], nz.max() + 3)) if len(nz) else (0, roll.shape[1])
        ax.imshow(roll[:, lo:hi].T, aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1,
                  extent=(0, roll.shape[0], low_pitch + lo - 0.5, low_pitch + hi - 0.5), interpolation="nearest")
        if split_at:
            ax.axvline(split_at, color="tab:red", lw=1, label="primer | generated")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("MIDI pitch")
    axes[-1, 0].set_xlabel("frame" + (f" ({frame_seconds:g} s)" if frame_seconds else ""))
    return save_png(fig, path)
