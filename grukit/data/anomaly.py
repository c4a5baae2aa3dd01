"""Multivariate series for anomaly detection: value columns, an optional 0/1 label column and a time column
read from a table (CSV/Parquet) or a built-in set, and the fixed-length windows the autoencoder reads."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError
from .timeseries import load_table_or_builtin, numeric, parse_times, pick_time_col, require_columns

__all__ = ["read_values", "windows"]


def read_values(cfg, data: str, roles: dict | None = None):
    """(values (n, F), labels (n,) or None, times or None, train_end, roles, display name) of a table or
    built-in set; ``cfg`` (an AutoencoderConfig) names the columns unless ``roles`` (a run's) is given."""
    df, defaults, path = load_table_or_builtin(data, "autoencoder")
    if roles is None:
        time_col = pick_time_col(df, cfg.time_col or defaults.get("time_col", ""), path)
        label_col = cfg.label_col or defaults.get("label_col", "")
        require_columns(df, [label_col], path, "label column", "--label-col")
        columns = list(cfg.columns or defaults.get("columns", ()))
        require_columns(df, columns, path, "value column", "--columns")
        if not columns:
            columns = [c for c in df.columns if c not in (time_col, label_col)
                       and pd.api.types.is_numeric_dtype(df[c])]
            if not columns:
                raise DataError("no numeric value column; name them with --columns", path=path)
        roles = {"time_col": time_col, "label_col": label_col, "columns": columns}
    else:
        require_columns(df, [roles["time_col"], *roles["columns"]], path)
    values = np.stack([numeric(df, c, path) for c in roles["columns"]], 1)          # (n, F)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError("missing or infinite value; expected finite numbers (fill or drop the row)", path=path,
                        line=int(r) + 2, column=roles["columns"][c])
    labels = None
    if roles["label_col"] and roles["label_col"] in df.columns:
        lab = numeric(df, roles["label_col"], path)
        ok = np.isin(lab, (0, 1))
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise DataError(f"label {lab[r]!r}; expected 0 (normal) or 1 (anomaly)", path=path, line=r + 2,
                            column=roles["label_col"])
        labels = lab.astype(int)
    times = parse_times(df, roles["time_col"], path) if roles["time_col"] else None
    train_end = int(defaults.get("train_end", round(cfg.train_fraction * len(values))))
    return values, labels, times, train_end, roles, path


def windows(z: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(N, window, F) float32 windows of ``z`` (n, F) starting every ``stride`` rows."""
    starts = np.arange(0, len(z) - window + 1, stride)
    return np.stack([z[s:s + window] for s in starts]).astype(np.float32)             # (N, window, F)
