"""Panels of time series: reading long and wide (M4) tables into checked :class:`Series`.

Layouts:

- **long**: one row per time step, an optional series-id column, a time column, target and covariate columns
  (CSV or Parquet). Rows are sorted by time within each series. Two rows of one series with the same time stamp
  are an error naming the series and the stamp, unless ``duplicates`` says how to combine them (``mean``,
  ``sum`` or ``last``).
- **wide** (the M4 competition's files): one row per series, the id in the first column, then the values in
  time order, empty cells after the series' end (series have different lengths). ``layout="auto"`` takes a
  table as wide when it has no time column, its first column holds distinct non-numeric ids and every other
  column is numeric (or empty).

Problems name the file, the line, the column and the series. Values whose square overflows float64 (|y| >
1e150) are refused (errors could not be scored); smaller magnitudes are scaled per series, never clipped.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .timeseries import (load_table_or_builtin, looks_like_times, numeric, parse_times, period_column,
                         pick_time_col, require_columns, time_gaps, time_grid)

__all__ = ["Series", "roles_for", "read_series", "read_wide", "is_wide", "load_panel", "drop_short",
           "MAX_MAGNITUDE", "DUPLICATES", "GAPS"]

MAX_MAGNITUDE = 1e150           # beyond this, squared errors overflow float64
DUPLICATES = ("error", "mean", "sum", "last")
GAPS = ("interpolate", "keep", "error")       # time steps a series skips: filled, read as consecutive, refused


@dataclass
class Series:
    id: str
    times: pd.Series | None        # (n,) datetimes or numbers, None when the file has no time column
    y: np.ndarray                  # (n, C) targets, original units; NaN only on future rows
    known: np.ndarray              # (n, K) known-future covariates
    past: np.ndarray               # (n, P) past-only covariates
    n_obs: int                     # rows with observed targets (the rest are future rows)
    filled: np.ndarray | None = None   # (n,) rows whose targets were interpolated (skipped steps, empty cells)

    def n_filled(self, start: int, stop: int) -> int:
        """How many of rows ``start:stop`` hold interpolated targets."""
        return 0 if self.filled is None else int(self.filled[start:stop].sum())


def roles_for(df: pd.DataFrame, path: str, *, time_col: str = "", target=(), known=(), past=(), id_col: str = "",
              defaults: dict | None = None) -> dict[str, Any]:
    """Column roles of a long table: time, targets (default: every numeric column not otherwise used), known
    and past covariates, series id."""
    defaults = defaults or {}
    time_col = pick_time_col(df, time_col or defaults.get("time_col", ""), path,
                             exclude=[id_col, *target, *known, *past])
    target, known, past = list(target or defaults.get("target", ())), list(known), list(past)
    require_columns(df, [id_col] if id_col else [], path, "series-id column", "--id-col")
    require_columns(df, target, path, "target column", "--target")
    require_columns(df, known, path, "known covariate column", "--known")
    require_columns(df, past, path, "past covariate column", "--past")
    if not target:
        used = {time_col, id_col, *known, *past}
        target = [c for c in df.columns if c not in used and pd.api.types.is_numeric_dtype(df[c])
                  and not _row_index(df, c)]
        if not target:
            raise DataError("no numeric target column found" + _mostly_numeric(df, used)
                            + "; name it with --target", path=path)
    return {"time_col": time_col, "target": target, "known": known, "past": past, "id_col": id_col,
            "layout": "long"}


def _row_index(df: pd.DataFrame, c) -> bool:
    """True for the row numbers pandas writes as an unnamed first column (``df.to_csv()`` with its index):
    header "" or "Unnamed: 0", values 0, 1, 2, ... (or from 1): not a target."""
    if not (str(c) == "" or str(c).startswith("Unnamed:")):
        return False
    v = df[c].to_numpy()
    return len(v) > 1 and bool(np.all(np.diff(v) == 1)) and v[0] in (0, 1)


def _mostly_numeric(df: pd.DataFrame, used: set) -> str:
    """Where a column of mostly numbers (over half its values) was read as text: ", though column 'x' is
    numbers but for 'abc' at line N" (the header is line 1), or ""."""
    for c in df.columns:
        if c in used or pd.api.types.is_numeric_dtype(df[c]):
            continue
        col = df[c]
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna()
        if bad.any() and bad.mean() < 0.5:
            at = int(np.flatnonzero(bad.to_numpy())[0])
            return f", though column {c!r} is numbers but for {col.iloc[at]!r} at line {at + 2}"
    return ""


def _implied_id(df: pd.DataFrame, roles: dict, times: pd.Series, path: str) -> str:
    """The id column of a long panel read without --id-col: where the time stamps (``times``, parsed) repeat
    and exactly one text column (store names, M5's item ids) makes them one per value and time, that column,
    with a note; else "" (numbers that would do are only suggested, in the duplicate-stamp error: a 0/1
    covariate could do too)."""
    if not times.duplicated().any():
        return ""
    used = {roles["time_col"], *roles["target"], *roles["known"], *roles["past"]}
    text = [c for c in _id_candidates(df.drop(columns=[c for c in used if c in df.columns]), times, "")
            if not pd.api.types.is_numeric_dtype(df[c])]
    if len(text) != 1:
        return ""
    warnings.warn(f"{path}: the time stamps repeat, and column {text[0]!r} tells {df[text[0]].nunique()} series "
                  "apart: read as the series id (pass --id-col to choose another)", stacklevel=3)
    return text[0]


def _id_candidates(df: pd.DataFrame, times: pd.Series, time_col: str) -> list[str]:
    """Columns that would make (column, time) unique: a panel read without --id-col (store 1, store 2 ...)."""
    out = []
    for c in df.columns:
        if c == time_col or df[c].nunique() > len(df) // 2 or df[c].nunique() < 2:
            continue
        if not pd.DataFrame({"i": df[c].astype(str).to_numpy(), "t": times.to_numpy()}).duplicated().any():
            out.append(c)
    return out


def _combine_duplicates(df: pd.DataFrame, roles: dict, times: pd.Series, path: str, how: str) -> pd.DataFrame:
    """Raise on repeated (series, time) rows, or combine them with ``how`` (mean, sum, last)."""
    key = [df[roles["id_col"]].astype(str)] if roles["id_col"] else []
    frame = pd.DataFrame({"_t": times.to_numpy()})
    if key:
        frame["_id"] = key[0].to_numpy()
    cols = ["_id", "_t"] if key else ["_t"]
    dup = frame.duplicated(cols, keep=False).to_numpy()
    if not dup.any():
        return df
    if how == "error":
        first = int(np.flatnonzero(dup)[0])
        stamp = frame["_t"].iloc[first]
        same = np.flatnonzero(dup & (frame["_t"] == stamp).to_numpy()
                              & ((frame["_id"] == frame["_id"].iloc[first]).to_numpy() if key else True))
        who = f"series {frame['_id'].iloc[first]!r}" if key else "the series"
        ids = [] if key else _id_candidates(df, frame["_t"], roles["time_col"])
        hint = (f"; if the file holds several series, name their id column: --id-col {ids[0]}" if ids else "")
        raise DataError(f"{who} has duplicate time stamp {stamp} (lines {', '.join(str(i + 2) for i in same[:3])}); "
                        "expected one row per series and time: drop the repeats or choose --duplicates mean, "
                        f"sum or last{hint}", path=path, column=roles["time_col"])
    value_cols = [*roles["target"], *roles["known"], *roles["past"]]
    work = df.copy()
    work["_t"] = times.to_numpy()
    gcols = ([roles["id_col"]] if key else []) + ["_t"]
    agg = work.groupby(gcols, sort=False)[value_cols].agg(how).reset_index()
    agg[roles["time_col"]] = agg.pop("_t")
    return agg


def _fill_gaps(s: Series, grid: pd.Series, pos: np.ndarray) -> Series:
    """``s`` on its full time ``grid`` (``pos``: each row's place on it, :func:`time_grid`): the rows of the
    skipped steps inserted, every column linearly interpolated between its neighbours (targets only up to the
    last observed one; future rows keep their empty targets)."""
    G = len(grid)
    n_obs = int(pos[s.n_obs - 1]) + 1 if s.n_obs else 0

    def fill(a: np.ndarray, rows: int) -> np.ndarray:          # the first ``rows`` rows, interpolated on the grid
        out = np.full((G, a.shape[1]), np.nan)
        upto = int(pos[rows - 1]) + 1 if rows else 0
        for j in range(a.shape[1]):
            out[:upto, j] = np.interp(np.arange(upto), pos[:rows], a[:rows, j])
        return out

    filled = np.ones(G, bool)
    filled[pos] = False if s.filled is None else s.filled
    filled[n_obs:] = False
    return Series(s.id, grid, fill(s.y, s.n_obs), fill(s.known, len(pos)), fill(s.past, len(pos)), n_obs, filled)


def _holes(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of ``col``'s finite values, positions of its empty (NaN) cells between the first and the last
    of them)."""
    ok = np.flatnonzero(np.isfinite(col))
    if len(ok) < 2:
        return ok, ok[:0]
    return ok, np.flatnonzero(np.isnan(col[ok[0]:ok[-1]])) + ok[0]


def _interpolate_inside(a: np.ndarray, pos: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``a`` (n, C) with each column's empty cells among its first ``rows`` rows that lie between two of its
    finite values (:func:`_holes`) filled by linear interpolation at the rows' positions ``pos`` (time-grid
    places, or row numbers); cells before a column's first or after its last value stay empty. Returns (a copy,
    the mask (n,) of rows where a cell was filled)."""
    a, mask = a.astype(np.float64, copy=True), np.zeros(len(a), bool)
    for j in range(a.shape[1]):
        col = a[:rows, j]
        ok, hole = _holes(col)
        if len(hole):
            col[hole] = np.interp(pos[hole], pos[ok], col[ok])
            mask[hole] = True
    return a, mask


def _empty_inside(y: np.ndarray, rows: int) -> np.ndarray:
    """The mask (n,) of the first ``rows`` rows with an empty cell between two values of its column."""
    mask = np.zeros(len(y), bool)
    for j in range(y.shape[1]):
        mask[_holes(y[:rows, j])[1]] = True
    return mask


def _note(path: str, found: list[str], what: str, gaps: str, filled: str, kept: str) -> None:
    """One warning naming the series in ``found`` (the first three) that ``what``, and what was done: ``filled``
    under ``gaps`` interpolate, else ``kept``."""
    if found:
        warnings.warn(f"{path}: {len(found)} series {what} ({'; '.join(found[:3])}{' ...' if len(found) > 3 else ''})"
                      f": {filled if gaps == 'interpolate' else kept}", stacklevel=3)


def _values_note(path: str, found: list[str], gaps: str) -> None:
    """The warning for series with empty cells inside (``found``: 'series x: n rows, the first on line l')."""
    _note(path, found, "have empty values inside", gaps,
          "filled by linear interpolation (--gaps keep drops their rows, error refuses them)",
          "their rows dropped, the rest read as consecutive steps (--gaps interpolate fills them)")


def read_series(df: pd.DataFrame, roles: dict[str, Any], path: str, allow_future: bool = False,
                duplicates: str = "error", gaps: str = "interpolate", times: pd.Series | None = None
                ) -> list[Series]:
    """Split a long table into series, checking every value; future rows (all targets empty) only at the end,
    rows before a series' first target value (a series that starts later) dropped. ``gaps``: time steps a
    series skips (days left out of daily data) and empty cells between a column's values (a sensor's missing
    reading) are filled by linear interpolation in time (``interpolate``), read as consecutive rows (``keep``:
    rows with an empty target dropped) or refused (``error``); a warning names them, and each series' ``filled``
    mask keeps which targets were interpolated (the evaluation says when it scores them). ``times``: the time
    column already parsed, when the caller has it."""
    df = df.reset_index(drop=True)
    for c in [*roles["target"], *roles["known"], *roles["past"]]:
        numeric(df, c, path)                                   # a non-numeric cell: its line and column
    if roles["time_col"]:
        times = parse_times(df, roles["time_col"], path) if times is None else times
        combined = _combine_duplicates(df, roles, times, path, duplicates)
        if combined is not df:
            df = combined.reset_index(drop=True)
            times = parse_times(df, roles["time_col"], path)
    else:
        times = None
    cols = {c: numeric(df, c, path) for c in [*roles["target"], *roles["known"], *roles["past"]]}
    groups = df.groupby(df[roles["id_col"]].astype(str), sort=False).indices if roles["id_col"] else \
        {"series": np.arange(len(df))}
    out, skipped, empty = [], [], []
    for sid, idx in groups.items():
        idx = np.asarray(idx)
        if times is not None:
            idx = idx[np.argsort(times.iloc[idx].to_numpy(), kind="stable")]
        y = np.stack([cols[c][idx] for c in roles["target"]], axis=1)          # (n, C)
        missing = np.isnan(y).all(axis=1)
        if not missing.all() and missing[0]:                       # rows before the first value: it starts later
            idx, y = idx[int(np.argmin(missing)):], y[int(np.argmin(missing)):]
            missing = np.isnan(y).all(axis=1)
        n_obs = 0 if missing.all() else len(idx) - int(np.argmin(missing[::-1]))
        if not allow_future:
            n_obs = len(idx)
        who = f" in series {sid!r}" if roles["id_col"] else ""
        inside = _empty_inside(y, n_obs)
        covs = [*roles["known"], *roles["past"]]
        if gaps == "interpolate" and covs:                         # covariates' empty cells are filled too
            inside |= _empty_inside(np.stack([cols[c][idx] for c in covs], 1), n_obs)
        if inside.any() and gaps != "error":
            empty.append(f"{'series ' + repr(str(sid)) + ': ' if roles['id_col'] else ''}{int(inside.sum())} "
                         f"rows, the first on line {int(idx[np.flatnonzero(inside)[0]]) + 2}")
        if inside.any() and gaps == "keep":                        # dropped: the rest read as consecutive
            idx, y, n_obs = idx[~inside], y[~inside], n_obs - int(inside.sum())
            inside = np.zeros(len(idx), bool)
        t = times.iloc[idx].reset_index(drop=True) if times is not None else None
        found = time_grid(t)
        pos = found[1] if found is not None else np.arange(len(idx))
        filled = np.zeros(len(idx), bool)
        if gaps == "interpolate":
            y, filled = _interpolate_inside(y, pos, n_obs)
        for j, c in enumerate(roles["target"]):                                # NaN/inf in observed targets
            bad = ~np.isfinite(y[:n_obs, j])
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                hint = ", or pass --gaps interpolate to fill empty values inside a series" if inside[first] else ""
                raise DataError(f"{'missing/NaN' if np.isnan(y[first, j]) else 'infinite'} target value{who}; "
                                f"expected finite numbers (fill or drop the row{hint})", path=path,
                                line=int(idx[first]) + 2, column=c)
        feats = []
        for c in [*roles["known"], *roles["past"]]:
            v = cols[c][idx]
            limit = len(idx) if c in roles["known"] else n_obs
            if gaps == "interpolate":
                v = _interpolate_inside(v[:, None], pos, limit)[0][:, 0]
            bad = ~np.isfinite(v[:limit])
            if bad.any():
                raise DataError(f"missing or infinite covariate value{who}; expected finite numbers", path=path,
                                line=int(idx[np.flatnonzero(bad)[0]]) + 2, column=c)
            feats.append(np.nan_to_num(v))
        K = len(roles["known"])
        known = np.stack(feats[:K], 1) if K else np.zeros((len(idx), 0))
        past = np.stack(feats[K:], 1) if roles["past"] else np.zeros((len(idx), 0))
        series = Series(str(sid), t, y, known, past, n_obs, filled)
        if found is not None:
            gap = time_gaps(t, found)
            what = f"{'series ' + repr(str(sid)) + ' ' if roles['id_col'] else ''}{gap[0]} missing, the first {gap[1]}"
            if gaps == "error":
                raise DataError(f"{what.replace(' missing', ' time steps missing', 1)}; expected one row per time "
                                "step: add the rows, or pass --gaps interpolate (fill them) or keep (read the "
                                "rows as consecutive)", path=path, column=roles["time_col"])
            skipped.append(what)
            if gaps == "interpolate":
                series = _fill_gaps(series, *found)
        out.append(series)
    _values_note(path, empty, gaps)
    _note(path, skipped, "skip time steps", gaps,
          "filled by linear interpolation (--gaps keep reads the rows as consecutive steps instead)",
          "their rows are read as consecutive steps, so lags and the season shift after a gap (--gaps "
          "interpolate fills them)")
    _check_magnitude(out, path)
    return out


def is_wide(df: pd.DataFrame, time_col: str = "") -> bool:
    """True for the M4 wide layout: no time column, distinct non-numeric ids first, numeric columns after."""
    if time_col or df.shape[1] < 3 or pick_time_col(df, "", ""):
        return False
    first = df.iloc[:, 0]
    if pd.api.types.is_numeric_dtype(first) or first.isna().any() or first.duplicated().any():
        return False
    if pd.to_numeric(first, errors="coerce").notna().any():
        return False
    if looks_like_times(first):                          # a long table's time column, not M4's ids
        return False
    rest = df.iloc[:, 1:]
    numeric_cols = sum(pd.api.types.is_numeric_dtype(rest[c]) for c in rest.columns)
    return numeric_cols >= 0.9 * rest.shape[1]


def read_wide(df: pd.DataFrame, path: str, gaps: str = "interpolate") -> list[Series]:
    """Series from the wide layout (id, then values; blanks before a series' start and after its end). Blanks
    between values are filled, dropped or refused as ``gaps`` says (see :func:`read_series`)."""
    ids = df.iloc[:, 0].astype(str).to_numpy()
    values = df.iloc[:, 1:]
    for c in values.columns:                                   # a non-numeric cell: its line, column and series
        if not pd.api.types.is_numeric_dtype(values[c]):
            v = pd.to_numeric(values[c], errors="coerce")
            bad = (v.isna() & values[c].notna() & (values[c].astype(str).str.strip() != "")).to_numpy()
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise DataError(f"non-numeric value {str(values[c].iloc[pos])!r} in series {ids[pos]!r}; expected "
                                "a number", path=path, line=pos + 2, column=str(c))
    arr = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)     # (S, T)
    out, empty = [], []
    for i, sid in enumerate(ids):
        row = arr[i]
        obs = np.flatnonzero(~np.isnan(row))
        start, stop = (int(obs[0]), int(obs[-1]) + 1) if len(obs) else (0, 0)
        y = row[start:stop, None]
        inside = np.isnan(y[:, 0])
        if np.isinf(y).any():
            j = start + int(np.flatnonzero(np.isinf(y[:, 0]))[0])
            raise DataError(f"infinite value inside series {sid!r} at step {j + 1}; expected finite numbers",
                            path=path, line=i + 2, column=str(values.columns[j]))
        if inside.any() and gaps == "error":
            j = start + int(np.flatnonzero(inside)[0])
            raise DataError(f"gap (empty cell) inside series {sid!r} at step {j + 1}; expected values without "
                            "gaps, blanks only before the start and after the end (or pass --gaps interpolate "
                            "or keep)", path=path, line=i + 2, column=str(values.columns[j]))
        if inside.any():
            empty.append(f"series {sid!r}: {int(inside.sum())} cells, the first in column "
                         f"{values.columns[start + int(np.flatnonzero(inside)[0])]!r}")
        if gaps == "keep":
            y = y[~inside]
        filled = np.zeros(len(y), bool)
        if gaps == "interpolate" and inside.any():
            y, filled = _interpolate_inside(y, np.arange(len(y)), len(y))
        n = len(y)
        out.append(Series(str(sid), None, y, np.zeros((n, 0)), np.zeros((n, 0)), n, filled))
    _values_note(path, empty, gaps)
    _check_magnitude(out, path)
    return out


def _check_magnitude(series: list[Series], path: str) -> None:
    for s in series:
        y = s.y[: s.n_obs]
        if y.size and np.nanmax(np.abs(y)) > MAX_MAGNITUDE:
            raise DataError(f"series {s.id!r} has values up to {np.nanmax(np.abs(y)):.3g}; grukit scores forecasts "
                            f"in float64 and needs |values| <= {MAX_MAGNITUDE:.0e} (squared errors would overflow): "
                            "divide the data by a power of ten first", path=path)


def load_panel(data: str, *, layout: str = "auto", duplicates: str = "error", allow_future: bool = False,
               roles: dict | None = None, gaps: str = "interpolate", **role_args
               ) -> tuple[list[Series], dict[str, Any], str]:
    """Read ``data`` (file or built-in name) into series; returns (series, roles, display path).

    ``roles`` (from a trained run) fixes the columns; otherwise they come from ``role_args`` (time_col, target,
    known, past, id_col) and the built-in's defaults."""
    df, defaults, path = load_table_or_builtin(data, "forecast")
    if roles is None and not (role_args.get("time_col") or defaults.get("time_col")):
        used = [role_args.get("id_col") or "", *role_args.get("target", ()), *role_args.get("known", ()),
                *role_args.get("past", ())]
        df, period = period_column(df, used)            # year + quarter (or month) columns: one time column
        role_args = {**role_args, "time_col": period} if period else role_args
    elif roles and roles.get("time_col") and roles["time_col"] not in df.columns:
        df, _ = period_column(df, [roles["id_col"], *roles["target"], *roles["known"], *roles["past"]])
    want = (roles or {}).get("layout", layout)
    if want == "wide" or (want == "auto" and not roles and not role_args.get("id_col")
                          and is_wide(df, role_args.get("time_col", ""))):
        return read_wide(df, path, gaps), {"time_col": "", "target": ["y"], "known": [], "past": [], "id_col": "id",
                                           "layout": "wide"}, path
    times = None                                        # parsed once, where the id is looked for already
    if roles is None:
        roles = roles_for(df, path, defaults=defaults, **role_args)
        if not roles["id_col"] and roles["time_col"]:
            times = parse_times(df.reset_index(drop=True), roles["time_col"], path)
            roles["id_col"] = _implied_id(df, roles, times, path)
    else:
        roles = {**roles, "layout": "long"}
        require_columns(df, [roles["time_col"], roles["id_col"], *roles["target"], *roles["known"],
                             *roles["past"]], path)
    return read_series(df, roles, path, allow_future=allow_future, duplicates=duplicates, gaps=gaps,
                       times=times), roles, path


def drop_short(series: list[Series], need: int, why: str, path: str) -> list[Series]:
    """Series with at least ``need`` observed points; the others are skipped with one warning naming them."""
    keep = [s for s in series if s.n_obs >= need]
    short = [s for s in series if s.n_obs < need]
    if short:
        names = ", ".join(f"{s.id!r} ({s.n_obs})" for s in short[:10]) + (" ..." if len(short) > 10 else "")
        warnings.warn(f"{path}: skipped {len(short)} series too short to {why} (need {need} points): {names}",
                      stacklevel=2)
    if not keep:
        raise DataError(f"no series has the {need} points needed to {why}", path=path)
    return keep
