"""Reading labelled sequence collections for classification: ``.npz``, ``.ts`` and ``.arff`` (aeon's readers), the
UCR archive's headerless ``.tsv``/``.txt``/``.csv`` rows (label, then the values), long CSV/Parquet.

Every reader returns ``(sequences, labels)``: a list of float32 ``(T_i, F)`` arrays (each keeps its own
length) and string labels (or None when the file has none). Problems raise :class:`~grukit.errors.DataError`
naming the file and, where it applies, the line, the array or column, and what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, nearest
from .timeseries import numeric, parse_times, read_table, require_columns

__all__ = ["read_npz", "read_ts", "read_arff", "read_ucr", "is_ucr_rows", "read_long", "read_labelled",
           "check_features", "normalise_series", "stratified_split", "locate_ts_problem"]


def read_labelled(p: str | Path, need_labels: bool = True, id_col: str = "id", time_col: str = "time",
                  label_col: str = "label") -> tuple[list[np.ndarray], np.ndarray | None]:
    """Sequences and labels of a ``.npz``, ``.ts``, ``.arff``, ``.tsv``/``.txt`` (UCR rows), ``.csv`` (UCR rows
    when its first line is all numbers, else long format) or ``.parquet`` file, chosen by its suffix."""
    p = Path(p)
    if not p.exists():
        raise DataError("file not found", path=p)
    if p.is_dir():
        raise DataError("is a directory; expected a .npz, .ts, .csv or .parquet file", path=p)
    if p.stat().st_size == 0:
        raise DataError("the file is empty", path=p)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        seqs, y = read_npz(p, need_labels)
    elif suffix == ".ts":
        seqs, y = read_ts(p)
    elif suffix == ".arff":
        seqs, y = read_arff(p)
    elif suffix in (".tsv", ".txt") or (suffix == ".csv" and is_ucr_rows(p)):
        seqs, y = read_ucr(p)
    elif suffix in (".csv", ".parquet", ".pq"):
        seqs, y = read_long(p, id_col, time_col, label_col, need_labels)
    else:
        raise DataError(f"unknown file type {suffix!r}; expected .npz, .ts, .arff, .tsv/.txt (UCR rows), .csv "
                        "or .parquet", path=p)
    if need_labels and y is None:
        raise DataError("no labels; expected y (npz) or the label column (CSV)", path=p)
    return seqs, y


# ---------------------------------------------------------------- .npz
def read_npz(p: Path, need_labels: bool = True) -> tuple[list[np.ndarray], np.ndarray | None]:
    """``X`` (N, T, F) or (N, T), optional ``lengths`` (N,) and ``y`` (N,); padding beyond lengths is never read."""
    try:
        z = np.load(p, allow_pickle=False)
        files = set(z.files)
    except ValueError as e:
        raise DataError(f"cannot be read without unpickling ({e}); store X as a padded float array "
                        "(N, T, F) with a lengths array", path=p) from None
    except Exception as e:  # noqa: BLE001 - zip/format errors
        raise DataError(f"not a readable .npz file: {e}", path=p) from None
    if "X" not in files:
        raise DataError(f"no array 'X'{nearest('X', files)}; expected X (N, T, F), y (N,) and optionally "
                        f"lengths (N,); found {', '.join(sorted(files)) or 'nothing'}", path=p)
    try:
        X = np.asarray(z["X"])
    except ValueError as e:
        raise DataError(f"array X cannot be loaded without unpickling ({e}); store it padded (N, T, F) with "
                        "lengths", path=p) from None
    if X.ndim == 2:
        X = X[:, :, None]                                                   # (N, T) -> (N, T, 1)
    if X.ndim != 3 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"X has shape {X.shape}; expected (N, T, F) with N, T >= 1", path=p, column="X")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"X has dtype {X.dtype}; expected numbers", path=p, column="X")
    N, T, _ = X.shape
    lengths = _npz_lengths(z, files, N, T, p)
    seqs = []
    for i in range(N):
        s = X[i, : int(lengths[i])].astype(np.float32)
        bad = ~np.isfinite(s)
        if bad.any():
            t, f = np.argwhere(bad)[0]
            raise DataError(f"non-finite value in X[{i}, {t}, {f}] (sequence {i}, step {t}, feature {f}); "
                            "expected finite numbers (impute or shorten via lengths)", path=p, column="X")
        seqs.append(s)
    y = None
    if "y" in files:
        y = np.asarray(z["y"]).astype(str).reshape(-1)
        if len(y) != N:
            raise DataError(f"y has {len(y)} labels but X holds {N} sequences; expected one label per sequence",
                            path=p, column="y")
    elif need_labels:
        raise DataError("no array 'y' (labels); expected y (N,)", path=p)
    return seqs, y


def _npz_lengths(z, files: set, N: int, T: int, p: Path) -> np.ndarray:
    if "lengths" not in files:
        return np.full(N, T)
    lengths = np.asarray(z["lengths"])
    if lengths.shape != (N,):
        raise DataError(f"inconsistent sequence lengths: lengths has shape {lengths.shape} but X holds {N} "
                        f"sequences; expected shape ({N},)", path=p, column="lengths")
    if not np.issubdtype(lengths.dtype, np.integer) or lengths.min() < 1 or lengths.max() > T:
        out = (lengths < 1) | (lengths > T) if np.issubdtype(lengths.dtype, np.number) else None
        bad = int(np.flatnonzero(out)[0]) if out is not None and out.any() else 0
        raise DataError(f"inconsistent sequence lengths: lengths[{bad}] = {lengths[bad]}; expected integers "
                        f"in [1, {T}] (the padded length of X)", path=p, column="lengths")
    return lengths


# ---------------------------------------------------------------- .ts
def read_ts(p: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """A ``.ts`` file through aeon's reader; a file aeon rejects is scanned to name the offending line."""
    from aeon.datasets import load_from_ts_file
    try:
        X, y = load_from_ts_file(str(p))
    except Exception as e:  # noqa: BLE001 - the .ts parser's many errors
        line, why = locate_ts_problem(p)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "TextIOWrapper" in first or not first.strip():
            first = type(e).__name__
        raise DataError(f"cannot be read as a .ts file: {why or first}", path=p, line=line) from None
    seqs = [np.asarray(x, dtype=np.float32).T for x in X]                   # (F, T) -> (T, F)
    for i, s in enumerate(seqs):
        if not np.isfinite(s).all():
            raise DataError(f"missing or non-finite value in case {i + 1} (line {_data_line(p, i)}); expected "
                            "finite numbers", path=p)
    return seqs, np.asarray(y).astype(str)


def read_arff(p: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """A UCR/UEA ``.arff`` file (univariate, or multivariate with relational attributes) through aeon's reader."""
    from aeon.datasets import load_from_arff_file
    try:
        X, y = load_from_arff_file(str(p))
    except Exception as e:  # noqa: BLE001 - the .arff parser's many errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot be read as an .arff file: {first}", path=p, line=_arff_bad_line(p)) from None
    seqs = []
    for i, x in enumerate(X):
        s = np.asarray(x, dtype=np.float32).T                               # (F, T) -> (T, F)
        if not np.isfinite(s).all():
            raise DataError(f"missing or non-finite value in case {i + 1}; expected finite numbers", path=p)
        seqs.append(s)
    return seqs, np.asarray(y).astype(str)


def _arff_bad_line(p: Path) -> int | None:
    """The first data line of a univariate ``.arff`` with a value (all but the last, the label) that is not a
    number; None if none is found (or the file is multivariate: relational values are quoted)."""
    data = False
    for no, line in _lines(p):
        text = line.strip()
        if not data:
            data = text.lower().startswith("@data")
            continue
        if text and not text.startswith("%") and "'" not in text:
            cells = text.split(",")[:-1]
            if pd.to_numeric(pd.Series(cells).str.strip().replace("?", "nan"), errors="coerce").isna().any():
                return no
    return None


# ---------------------------------------------------------------- UCR archive rows
def _ucr_sep(first: str) -> str:
    return "\t" if "\t" in first else "," if "," in first else r"\s+"


def _first_line(p: Path) -> str | None:
    try:
        with open(p, encoding="utf-8") as f:
            return f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _is_ucr_line(first: str | None) -> bool:
    if not first:
        return False
    cells = [c for c in pd.Series([first]).str.split(_ucr_sep(first), regex=True)[0] if c != ""]
    return len(cells) >= 3 and bool(pd.to_numeric(pd.Series(cells), errors="coerce").notna().all())


def is_ucr_rows(p: Path) -> bool:
    """True when the first line of ``p`` is all numbers (no header) with a label and at least two values: the
    UCR archive's layout (2018's ``.tsv``, the older comma- or space-separated ``.txt``/``.csv``)."""
    return _is_ucr_line(_first_line(p))


def read_ucr(p: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The UCR archive's rows: one series per line, its label first, then its values, no header; separated
    by tabs (2018's ``.tsv``), commas or spaces (the older ``.txt``). Shorter series are padded at the end
    with NaN (or left short); gaps inside a series (NaN, as in a few 2018 sets) are filled by linear
    interpolation with a warning. Labels that are whole numbers written as floats (``1.0000000e+00``) read
    as ``1``."""
    first = _first_line(p)
    if not _is_ucr_line(first):
        raise DataError(f"not UCR archive rows: {(first or '')[:60]!r} is not all numbers; expected the label, then "
                        "the series' values, no header (or a .csv in long format, or .ts)", path=p, line=1)
    try:
        df = pd.read_csv(p, header=None, sep=_ucr_sep(first), engine="python", dtype=str, skip_blank_lines=True)
    except Exception as e:  # noqa: BLE001 - pandas' parser errors (ragged rows and the like)
        raise DataError(f"cannot be read as UCR rows: {str(e).splitlines()[0]}", path=p) from None
    labels = df.iloc[:, 0].str.strip()
    values = df.iloc[:, 1:].apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))
    text = df.iloc[:, 1:].notna() & values.isna() & ~df.iloc[:, 1:].apply(lambda c: c.str.strip().str.lower()
                                                                           .isin(["nan", "?", ""]))
    if text.to_numpy().any():
        r, c = np.argwhere(text.to_numpy())[0]
        raise DataError(f"value {df.iat[r, c + 1]!r} is not a number; expected numbers (NaN for a gap or "
                        "the padding after a shorter series)", path=p, line=int(r) + 1, column=f"value {c + 1}")
    return _row_series(labels, values.to_numpy(np.float64), p, first_line=1)


def _row_series(labels: pd.Series | None, X: np.ndarray, p: Path, first_line: int
                ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One univariate series per row of ``X`` (UCR rows, or a table with a label column and value columns):
    NaN after a row's last value is the padding of a shorter series, NaN inside it a gap filled by linear
    interpolation (with a warning), an infinite value refused with its line (``first_line``: the first row's);
    ``labels`` None (a file to predict on) gives None back."""
    import warnings
    if labels is not None:
        num = pd.to_numeric(labels, errors="coerce")
        if num.notna().all() and np.all(np.mod(num, 1) == 0):
            labels = num.astype(np.int64).astype(str)
    seqs, gaps = [], []
    for i, row in enumerate(X):
        if np.isinf(row).any():                      # checked on the whole row: one at the end is no padding
            raise DataError("infinite value; expected finite numbers", path=p, line=i + first_line,
                            column=f"value {int(np.flatnonzero(np.isinf(row))[0]) + 1}")
        ok = np.flatnonzero(np.isfinite(row))
        if ok.size == 0:
            raise DataError("a row with a label and no values; expected at least one number after the label",
                            path=p, line=i + first_line)
        row = row[: ok[-1] + 1]                                          # the padding after a shorter series
        if ok.size < row.size:
            gaps.append(i + first_line)
            row = np.interp(np.arange(row.size), ok, row[ok])
        seqs.append(row.astype(np.float32)[:, None])
    if gaps:
        warnings.warn(f"{p}: {len(gaps)} series have gaps (NaN inside the series), filled by linear "
                      f"interpolation (first at line {gaps[0]})", stacklevel=4)
    return seqs, None if labels is None else labels.to_numpy().astype(str)


LABEL_NAMES = ("label", "class", "target", "y")   # a one-row-per-series table's label column, by name


def wide_label_col(df: pd.DataFrame, label_col: str) -> str:
    """The label column of a table with one series per row (a label column, then at least 2 numeric value
    columns and nothing else, as Kaggle's ECG sets and the UCR archive saved with a header are), or "" when
    the table is not one."""
    lower = {str(c).lower(): c for c in df.columns}
    name = label_col if label_col in df.columns else next((lower[k] for k in LABEL_NAMES if k in lower), "")
    if not name:
        return ""
    rest = [c for c in df.columns if c != name]
    return name if len(rest) >= 2 and all(pd.api.types.is_numeric_dtype(df[c]) for c in rest) else ""


def read_wide_labelled(df: pd.DataFrame, label_col: str, p: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Series from a table with one series per row (see :func:`wide_label_col`), value columns in order."""
    values = df[[c for c in df.columns if c != label_col]].to_numpy(np.float64)
    return _row_series(df[label_col].astype(str).str.strip(), values, p, first_line=2)


def _lines(p: Path):
    with open(p, encoding="utf-8", errors="replace") as f:
        yield from enumerate(f, start=1)


def _data_line(p: Path, case: int) -> int | None:
    """The file line of data case ``case`` (0-based), or None."""
    seen = -1
    in_data = False
    for n, raw in _lines(p):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if in_data:
            seen += 1
            if seen == case:
                return n
        elif s.lower().startswith("@data"):
            in_data = True
    return None


def locate_ts_problem(p: Path) -> tuple[int | None, str]:
    """(line, what is wrong) for the first malformed line of a ``.ts`` file; (None, '') if none is found."""
    labels: list[str] | None = None
    has_labels = True
    dims = None
    in_data = False
    for n, raw in _lines(p):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if not in_data:
            low = s.lower()
            if low.startswith("@classlabel"):
                parts = s.split()
                has_labels = len(parts) > 1 and parts[1].lower() == "true"
                labels = parts[2:] if has_labels else None
            elif low.startswith("@data"):
                in_data = True
            elif not s.startswith("@"):
                return n, f"expected a header line starting with '@' or '@data' before the values, got {s[:40]!r}"
            continue
        fields = s.split(":")
        label = fields.pop() if has_labels and len(fields) > 1 else None
        if has_labels and label is None:
            return n, "no class label; expected values:label (dimensions separated by ':')"
        if labels is not None and label is not None and label.strip() not in labels:
            return n, f"class label {label.strip()!r} is not declared in @classLabel ({' '.join(labels[:10])})"
        if dims is None:
            dims = len(fields)
        elif len(fields) != dims:
            return n, f"{len(fields)} dimensions; expected {dims} like the first case"
        for d, field in enumerate(fields):
            if "(" in field:                                                # timestamped (t,v) pairs: aeon's job
                continue
            for v in field.split(","):
                v = v.strip()
                if v and v != "?":
                    try:
                        float(v)
                    except ValueError:
                        return n, f"dimension {d + 1}: {v[:20]!r} is not a number"
    if not in_data:
        return None, "no '@data' line; expected the header (@problemName, @classLabel ...) then @data"
    if dims is None:
        return None, "no cases after '@data'"
    return None, ""


# ---------------------------------------------------------------- long CSV / Parquet
def read_long(p: Path, id_col: str, time_col: str, label_col: str, need_labels: bool = True
              ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One row per (sequence, time step): ``id_col``, ``time_col``, feature columns, ``label_col``; or, where
    the table has neither the id nor the time column, one series per row (:func:`read_wide_labelled`)."""
    df = read_table(p)
    if id_col not in df.columns and time_col not in df.columns:
        wide = wide_label_col(df, label_col)
        if wide:
            return read_wide_labelled(df, wide, p)
        if not need_labels and df.shape[1] >= 2 and all(pd.api.types.is_numeric_dtype(df[c]) for c in df.columns):
            return _row_series(None, df.to_numpy(np.float64), p, first_line=2)
    has_label = label_col in df.columns
    require_columns(df, [id_col], p, "sequence-id column", "--id-col")
    require_columns(df, [time_col], p, "time column", "--time-col")
    if need_labels:
        require_columns(df, [label_col], p, "label column", "--label-col")
    feats = [c for c in df.columns if c not in (id_col, time_col, label_col)]
    if not feats:
        raise DataError(f"no feature columns besides {id_col!r}, {time_col!r} and {label_col!r}", path=p)
    values = np.stack([numeric(df, c, p) for c in feats], 1)                 # (rows, F)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError("missing or infinite feature value; expected finite numbers", path=p, line=int(r) + 2,
                        column=feats[c])
    t = parse_times(df, time_col, p)                                  # steps, or time stamps (ordered)
    t = t.astype("datetime64[ns]").astype(np.int64).to_numpy() if pd.api.types.is_datetime64_any_dtype(t) \
        else t.to_numpy(dtype=np.float64)
    seqs, labels = [], []
    for sid, idx in df.groupby(id_col, sort=False).indices.items():
        idx = idx[np.argsort(t[idx], kind="stable")]
        seqs.append(values[idx].astype(np.float32))
        if has_label:
            lab = df[label_col].iloc[idx].astype(str)
            if lab.nunique() > 1:
                r = int(idx[np.flatnonzero(lab.to_numpy() != lab.iloc[0])[0]])
                raise DataError(f"sequence {sid!r} has more than one label ({', '.join(lab.unique()[:3])}); "
                                "expected one label per sequence", path=p, line=r + 2, column=label_col)
            labels.append(lab.iloc[0])
    return seqs, (np.asarray(labels) if has_label else None)


# ---------------------------------------------------------------- checks and scaling
def check_features(seqs: list[np.ndarray], F_: int | None, name: str) -> int:
    """The common feature count F of ``seqs`` (each (T_i, F)); ``F_`` is the count the model expects."""
    if not seqs:
        raise DataError("no sequences; expected at least one", path=name)
    widths = {s.shape[1] for s in seqs}
    if len(widths) > 1 or (F_ is not None and widths != {F_}):
        want = F_ if F_ is not None else min(widths)
        bad = next(i for i, s in enumerate(seqs) if s.shape[1] != want)
        raise DataError(f"sequence {bad} has {seqs[bad].shape[1]} features; expected {want} like the "
                        f"{'training data' if F_ is not None else 'others'}", path=name)
    return widths.pop()


def normalise_series(s: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """z-normalise one (T, F) series per feature over its own steps (a constant feature becomes 0)."""
    mean = s.mean(0, keepdims=True)
    std = s.std(0, keepdims=True)
    return ((s - mean) / np.where(std > eps, std, 1.0)).astype(np.float32)



def stratified_split(y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), both sorted, holding out about ``fraction`` of every class.

    Every class keeps at least one training series; every class with two or more series also puts at least
    one in validation (when ``fraction > 0``), so the validation loss speaks for all classes.
    """
    rng = np.random.default_rng(seed)
    val: list[int] = []
    if fraction > 0:
        for k in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == k))
            if len(members) >= 2:
                take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
                val += members[:take].tolist()
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return train_idx, val_idx
