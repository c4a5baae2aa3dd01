"""Reading and checking time-series tables (CSV, Parquet), .npz arrays and .ts files.

Every problem is a :class:`~grukit.errors.DataError` naming the file, the row (as the line number in the file,
header = line 1) and the column, and what was expected.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import DataError, nearest

__all__ = ["read_table", "require_columns", "numeric", "finite", "looks_like_times", "pick_time_col", "period_column",
           "season_from_times", "future_times", "time_grid", "time_gaps", "load_table_or_builtin"]

TIME_NAMES = ("time", "date", "ds", "timestamp", "datetime", "month", "year", "period")


def csv_dialect(path: Path) -> dict[str, str]:
    """pandas.read_csv's ``sep`` and ``decimal`` for a text table: tabs in a .tsv; a header with semicolons or
    tabs and no comma is split on those (European spreadsheets write ``Datum;Umsatz``), and then numbers such as
    ``50,13`` have a decimal comma; else commas and points."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [f.readline() for _ in range(6)]
    header = lines[0]
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    if sep == "," and "," not in header:
        sep = ";" if ";" in header else "\t" if "\t" in header else ","
    body = "".join(lines[1:])
    decimal = "," if sep != "," and re.search(r"\d,\d", body) else "."
    return {"sep": sep, "decimal": decimal}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame; empty or unreadable files raise DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found; pass an existing CSV/Parquet file or a built-in name "
                        "(`grukit datasets`)", path=p)
    if p.is_dir():
        raise DataError("is a directory; expected a CSV or Parquet file", path=p)
    if p.stat().st_size == 0:
        raise DataError("the file is empty; expected a header row and data rows", path=p)
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif suffix in (".csv", ".txt", ".tsv", ""):
            df = pd.read_csv(p, **csv_dialect(p))
        else:
            raise DataError(f"unknown file type {suffix!r}; expected .csv or .parquet", path=p)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty; expected a header row and data rows", path=p) from None
    except Exception as e:  # parser errors of pandas / pyarrow
        raise DataError(f"cannot be read as {suffix or 'CSV'}: {str(e).splitlines()[0]}", path=p) from e
    if len(df) == 0:
        raise DataError("has a header but no data rows", path=p)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def require_columns(df: pd.DataFrame, cols: Iterable[str], path: str | Path, what: str = "column",
                    option: str = "") -> None:
    """Raise DataError for the first missing column, suggesting the nearest existing name (and ``option``,
    the command-line option that names the column, when given)."""
    for c in cols:
        if c and c not in df.columns:
            raise DataError(f"no {what} {c!r}{nearest(c, df.columns)}; the file has columns "
                            f"{', '.join(map(str, df.columns))}" + (f" (name it with {option})" if option else ""),
                            path=path)


def _line(df: pd.DataFrame, pos: int) -> int:
    """File line of the DataFrame row at position ``pos`` (header is line 1)."""
    return int(pos) + 2


def numeric(df: pd.DataFrame, col: str, path: str | Path, allow_missing: bool = True) -> np.ndarray:
    """Column ``col`` as float64; a non-numeric cell raises DataError naming its line and column."""
    s = df[col]
    if pd.api.types.is_bool_dtype(s):
        s = s.astype(float)
    vals = pd.to_numeric(s, errors="coerce")
    bad = vals.isna() & s.notna() & (s.astype(str).str.strip() != "")
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"non-numeric value {str(s.iloc[pos])!r}; expected a number", path=path,
                        line=_line(df, pos), column=col)
    out = vals.to_numpy(dtype=np.float64)
    if not allow_missing:
        finite(out, df, col, path)
    return out


def finite(values: np.ndarray, df: pd.DataFrame | None, col: str, path: str | Path, offset: int = 0) -> None:
    """Raise DataError at the first NaN or inf of ``values``."""
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        kind = "missing/NaN" if np.isnan(values[pos]) else "infinite"
        raise DataError(f"{kind} value in a target; expected finite numbers (fill or drop the row)", path=path,
                        line=(pos + offset + 2) if df is not None else None, column=col)


def month_starts(year: pd.Series, month: pd.Series) -> pd.Series:
    """The first days of the given months (whole numbers, as numbers or text)."""
    return pd.to_datetime(pd.DataFrame({"year": year.astype(float).astype(int),
                                        "month": month.astype(float).astype(int), "day": 1}))


def period_stamps(text: pd.Series) -> pd.Series:
    """Periods that pandas does not read as dates, as their first days: quarters (``1970 Q1``, ``1970Q1``,
    ``1970-Q1``, ``Q1 1970``), months in the statistics offices' form (``1949M01``, ``1949-M1``) and ISO weeks
    (``2020-W05``, ``2020W05``: the week's Monday); NaT where a value is none of them."""
    t = text.astype(str).str.strip().str.upper()
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    a = t.str.extract(r"^(\d{4})\s*[-/ ]?\s*Q([1-4])$")
    b = t.str.extract(r"^Q([1-4])\s*[-/ ]?\s*(\d{4})$")
    m = t.str.extract(r"^(\d{4})\s*-?\s*M(\d{1,2})$")
    year = a[0].fillna(b[1]).fillna(m[0])
    month = ((a[1].fillna(b[0]).astype(float) - 1) * 3 + 1).fillna(m[1].astype(float))
    ok = year.notna() & month.between(1, 12)
    if ok.any():
        out[ok] = month_starts(year[ok], month[ok])
    w = t.str.extract(r"^(\d{4})-?W(\d{2})$")
    wk = w[0].notna() & ~ok
    if wk.any():
        out[wk] = pd.to_datetime(w[0][wk] + "-W" + w[1][wk] + "-1", format="%G-W%V-%u", errors="coerce")
    return out


def looks_like_times(col: pd.Series) -> bool:
    """True for a text column whose every value reads as a time stamp with a separator next to a digit
    (``2020-01-01``, ``01/02/2020``, ``2021-05-01 00:30:00+00:00``, ``Jan 2020``) or a period pandas does not
    read (``1970 Q1``, ``1949M01``, ``2020-W05``: :func:`period_stamps`).
    An id such as T1 or M4's
    H1 parses as a date too (year 1, day 1: "T" is ISO 8601's time designator) but has no separator."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if pd.api.types.is_numeric_dtype(col) or len(col) == 0 or col.isna().any():
        return False
    text = col.iloc[:200].astype(str).str.strip()          # a sample: the whole column is parsed later anyway
    if pd.to_numeric(text, errors="coerce").notna().any():
        return False
    if period_stamps(text).notna().all():
        return True
    dated = pd.to_datetime(text, errors="coerce", format="mixed", utc=True).notna()
    return bool((dated & text.str.contains(r"\d[-/:. ]|[-/:. ]\d")).all())


def pick_time_col(df: pd.DataFrame, requested: str, path: str | Path, exclude: Iterable[str] = ()) -> str:
    """The time column: ``requested``; else one named time, date, ds, timestamp, ...; else one whose name holds
    "date" or "time" (``datetime_gmt``, ``order_date``) and whose values read as time stamps; else the first
    column (not in ``exclude``) of time stamps by its values alone; else "" (row order)."""
    if requested:
        require_columns(df, [requested], path, "time column", "--time-col")
        return requested
    lower = {c.lower(): c for c in df.columns if isinstance(c, str)}
    for name in TIME_NAMES:
        if name in lower:
            return lower[name]
    candidates = [c for c in df.columns if c not in set(exclude)]
    named = [c for c in candidates if isinstance(c, str) and ("date" in c.lower() or "time" in c.lower())]
    for c in named + [c for c in candidates if c not in named]:
        if looks_like_times(df[c]):
            return c
    return ""


MONTH_NAMES = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                                "oct", "nov", "dec"))}
PERIOD_PARTS = {"quarter": (4, 3), "qtr": (4, 3), "q": (4, 3), "month": (12, 1), "mon": (12, 1), "m": (12, 1)}


def period_column(df: pd.DataFrame, used: Iterable[str] = ()) -> tuple[pd.DataFrame, str]:
    """Tables that give the time as a year column and a quarter or month column (statsmodels' macrodata: year,
    quarter; many economic files: year, month, as a number or a name such as Jan): (``df`` with one column of
    the periods' first days in their place, its name), so that the rows are one time axis and the season
    follows (quarterly 4, monthly 12); (``df``, "") where there is no such pair of whole numbers in range, a
    column of it is in ``used`` (named as a target, covariate, id or time column), or another column is a time
    column (a date beside them)."""
    lower = {c.lower(): c for c in df.columns if isinstance(c, str)}
    year = lower.get("year")
    part = next((lower[k] for k in PERIOD_PARTS if k in lower), None)
    if year is None or part is None or {year, part} & set(used) \
            or pick_time_col(df.drop(columns=[year, part]), "", ""):     # a date beside them is the time column
        return df, ""
    y, q = pd.to_numeric(df[year], errors="coerce"), pd.to_numeric(df[part], errors="coerce")
    top, months = PERIOD_PARTS[part.lower()]
    if top == 12 and q.isna().all():                    # month names: Jan, January, jan.
        q = df[part].astype(str).str.strip().str[:3].str.lower().map(MONTH_NAMES)
    if y.isna().any() or q.isna().any() or (y % 1).any() or (q % 1).any() or not y.between(1, 9999).all() \
            or not q.between(1, top).all():
        return df, ""
    name = f"{year}_{part}"
    stamps = month_starts(y, (q.astype(int) - 1) * months + 1)
    out = df.drop(columns=[year, part])
    out.insert(list(df.columns).index(year), name, stamps)
    return out, name


def day_first(text: pd.Series) -> bool:
    """Whether dates written as ``dd.mm.yyyy`` / ``dd/mm/yyyy`` put the day first. pandas reads ``01/02/2020``
    as January 2 and ``13/02/2020`` as February 13, element by element, so a British or European daily file
    came out with its days shuffled into months: a first number above 12 decides it, a second above 12 decides
    the other way; where all are 12 or less, the one that stays fixed is the day (monthly data stamped on the
    1st), else the reading whose stamps have a regular step, else the separator's custom (dots: day first).
    False where the values are not in that shape."""
    parts = text.astype(str).str.strip().str.extract(r"^(\d{1,2})([./-])(\d{1,2})[./-]\d{2,4}\b")
    if len(parts) == 0 or parts[0].isna().any():
        return False
    a, b = parts[0].astype(int), parts[2].astype(int)
    if (a > 12).any() or (b > 12).any():
        return bool((a > 12).any())
    if a.nunique() == 1 < b.nunique() or b.nunique() == 1 < a.nunique():   # monthly data on a fixed day
        return bool(a.nunique() == 1)

    def regular(flag: bool) -> bool:
        t = pd.DatetimeIndex(pd.to_datetime(text, errors="coerce", format="mixed", dayfirst=flag).dropna()
                             .sort_values().unique())
        return len(t) > 2 and pd.infer_freq(t) is not None
    first, second = regular(True), regular(False)
    return first if first != second else bool(parts[1].iloc[0] == ".")


def parse_times(df: pd.DataFrame, col: str, path: str | Path) -> pd.Series:
    """The time column as datetimes or numbers (years, steps)."""
    s = df[col]
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        return s
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all():
        return num
    periods = period_stamps(s)
    if periods.notna().all():
        return periods
    t = pd.to_datetime(s, errors="coerce", format="mixed", dayfirst=day_first(s))
    if t.isna().any():
        pos = int(np.flatnonzero(t.isna().to_numpy())[0])
        raise DataError(f"cannot parse {str(s.iloc[pos])!r} as a date or number; expected e.g. 2024-01-31",
                        path=path, line=_line(df, pos), column=col)
    return t


def season_from_times(times: pd.Series | None) -> int:
    """A seasonal period from the time step: monthly 12, quarterly 4, weekly 52, daily 7, business-daily 5; a
    step under a day that divides it: the day (hourly 24, half-hourly 48, 15-minute 96, ..., at most 1,440
    steps, minutely); else 1."""
    if times is None or len(times) < 3 or not pd.api.types.is_datetime64_any_dtype(times):
        return 1
    freq = pd.infer_freq(pd.DatetimeIndex(times.iloc[: min(len(times), 50)]))
    if not freq:
        return 1
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    except (ValueError, TypeError):                     # calendar offsets (months, quarters) have no fixed length
        step = None
    if step is not None and pd.Timedelta(0) < step < pd.Timedelta(days=1):
        per_day = pd.Timedelta(days=1) / step
        return int(per_day) if float(per_day).is_integer() and per_day <= 1440 else 1
    f = freq.upper().split("-")[0]
    for prefix, m in (("MS", 12), ("ME", 12), ("M", 12), ("QS", 4), ("QE", 4), ("Q", 4), ("W", 52),
                      ("D", 7), ("B", 5)):
        if f.startswith(prefix.upper()):
            return m
    return 1


def time_grid(times: pd.Series | None) -> tuple[pd.Series, np.ndarray] | None:
    """For a sorted time column whose step is regular but for gaps (daily data with days left out, years with
    some absent): (every stamp from the first to the last at that step, the grid position of each row); None
    when there is no gap or no regular step to measure one by."""
    if times is None or len(times) < 3:
        return None
    if pd.api.types.is_datetime64_any_dtype(times):
        idx = pd.DatetimeIndex(times)
        if pd.infer_freq(idx) is not None:
            return None
        freq = pd.infer_freq(idx[: min(len(idx), 50)]) or pd.infer_freq(idx[-min(len(idx), 50):])
        if freq is None:                    # a gap near both ends (a short series): the commonest fixed step
            d = pd.Series(idx[1:] - idx[:-1])
            if not len(d) or not (d > pd.Timedelta(0)).all():
                return None
            freq = d.mode().iloc[0]
            k = (d / freq).to_numpy(dtype=float)
            if not np.allclose(k, np.round(k)):
                return None
        grid = pd.date_range(idx[0], idx[-1], freq=freq)
        pos = grid.get_indexer(idx)
        if (pos < 0).any() or len(grid) == len(idx):             # off the step's grid: irregular, not gappy
            return None
        return pd.Series(grid), pos
    v = np.asarray(times, dtype=float)
    d = np.diff(v)
    if not np.all(d > 0):
        return None
    step = float(pd.Series(d).mode().iloc[0])
    k = d / step
    if not np.allclose(k, np.round(k)) or k.max() < 1.5:
        return None
    pos = np.r_[0, np.cumsum(np.round(k))].astype(int)
    grid = v[0] + step * np.arange(pos[-1] + 1)
    if np.allclose(grid, np.round(grid)):
        grid = np.round(grid).astype(np.int64)
    return pd.Series(grid), pos


def time_gaps(times: pd.Series | None, found: tuple[pd.Series, np.ndarray] | None = None
              ) -> tuple[int, Any] | None:
    """(number of missing time steps, the first missing stamp) of a time column with gaps (see
    :func:`time_grid`; ``found``: its result, when the caller has it already); None when it has none."""
    found = found or time_grid(times)
    if found is None:
        return None
    grid, pos = found
    missing = np.setdiff1d(np.arange(len(grid)), pos)
    first = grid.iloc[int(missing[0])]
    if isinstance(first, pd.Timestamp) and first == first.normalize():
        first = first.date()
    return len(missing), (first.item() if hasattr(first, "item") else first)


def future_times(times: pd.Series, n: int) -> list[Any]:
    """The ``n`` time stamps after the last one, continuing the series' step."""
    if len(times) == 0:
        return list(range(n))
    if pd.api.types.is_datetime64_any_dtype(times):
        idx = pd.DatetimeIndex(times)
        freq = pd.infer_freq(idx[-min(len(idx), 50):]) if len(idx) >= 3 else None
        if freq:
            return list(pd.date_range(idx[-1], periods=n + 1, freq=freq)[1:])
        step = idx[-1] - idx[-2] if len(idx) > 1 else pd.Timedelta(1, "D")
        return [idx[-1] + step * (i + 1) for i in range(n)]
    v = np.asarray(times, dtype=float)
    step = v[-1] - v[-2] if len(v) > 1 else 1.0
    out = [v[-1] + step * (i + 1) for i in range(n)]
    return [int(x) if float(x).is_integer() else x for x in out]


def load_table_or_builtin(data: str, task: str) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """A DataFrame from a file or a built-in set, with the set's defaults (column roles) and display name."""
    from . import builtin
    p = Path(data)
    if builtin.means_builtin(data):                     # a folder named nile is no table: the set
        df, defaults = builtin.get(data, task).loader()
        return df, defaults, data
    if not p.exists() and p.suffix == "":
        builtin.get(data, task)     # raises: not a file and not a built-in (with the nearest name)
    return read_table(p), {}, str(p)
