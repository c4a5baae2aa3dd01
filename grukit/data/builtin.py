"""Built-in data sets: ones that installed packages ship (statsmodels, aeon). Nothing is downloaded.

``grukit datasets`` lists them; ``--data NAME`` uses one wherever a file path is accepted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError

__all__ = ["Builtin", "DATASETS", "get", "available", "is_builtin", "means_builtin"]


@dataclass(frozen=True)
class Builtin:
    name: str
    task: str                 # forecast, classify, autoencoder
    package: str              # the package that ships it
    description: str
    loader: Callable[..., Any]


def _airline():
    import pandas as pd
    from aeon.datasets import load_airline
    y = np.asarray(load_airline(), dtype=float)
    t = pd.period_range("1949-01", periods=len(y), freq="M").to_timestamp()
    return pd.DataFrame({"month": t, "passengers": y}), {"time_col": "month", "target": ("passengers",)}


def _sunspots():
    import pandas as pd
    import statsmodels.api as sm
    d = sm.datasets.sunspots.load_pandas().data
    df = pd.DataFrame({"year": d["YEAR"].astype(int), "sunactivity": d["SUNACTIVITY"].astype(float)})
    return df, {"time_col": "year", "target": ("sunactivity",)}


def _lynx():
    import pandas as pd
    from aeon.datasets import load_lynx
    y = np.asarray(load_lynx(), dtype=float)
    return pd.DataFrame({"year": np.arange(1821, 1821 + len(y)), "lynx": y}), {"time_col": "year",
                                                                               "target": ("lynx",)}


def _nile():
    import pandas as pd
    import statsmodels.api as sm
    d = sm.datasets.nile.load_pandas().data
    return pd.DataFrame({"year": d["year"].astype(int), "volume": d["volume"].astype(float)}), {
        "time_col": "year", "target": ("volume",)}


def _classification(name: str):
    def load(split: str):
        from aeon.datasets import load_classification
        X, y = load_classification(name, split=split)
        seqs = [np.asarray(x, dtype=np.float32).T for x in X]       # aeon (F, T) -> (T, F)
        return seqs, np.asarray(y).astype(str)
    return load


def _kdd_tsad_135():
    import pandas as pd
    from aeon.datasets import load_kdd_tsad_135
    x, y = load_kdd_tsad_135(split="test")
    train_x, _ = load_kdd_tsad_135(split="train")
    df = pd.DataFrame({"t": np.arange(len(x)), "value": x.astype(float), "anomaly": y.astype(int)})
    return df, {"time_col": "t", "label_col": "anomaly", "columns": ("value",), "train_end": len(train_x)}

def _bach_chorales(**spec):
    from .music import RollSpec, bach_chorales
    return bach_chorales(RollSpec(**spec))


DATASETS: dict[str, Builtin] = {b.name: b for b in [
    Builtin("airline", "forecast", "aeon", "monthly airline passengers 1949-1960, 144 points, season 12",
            _airline),
    Builtin("sunspots", "forecast", "statsmodels", "yearly sunspot activity 1700-2008, 309 points, ~11-year "
            "cycle", _sunspots),
    Builtin("lynx", "forecast", "aeon", "yearly Canadian lynx trappings 1821-1934, 114 points", _lynx),
    Builtin("nile", "forecast", "statsmodels", "yearly Nile flow volume 1871-1970, 100 points", _nile),
    Builtin("japanese_vowels", "classify", "aeon", "UEA JapaneseVowels: 270 train / 370 test, 12 channels, "
            "lengths 7-29, 9 speakers", _classification("JapaneseVowels")),
    Builtin("basic_motions", "classify", "aeon", "UEA BasicMotions: 40/40, 6 channels x 100, 4 classes",
            _classification("BasicMotions")),
    Builtin("gunpoint", "classify", "aeon", "UCR GunPoint: 50/150, 1 channel x 150, 2 classes",
            _classification("GunPoint")),
    Builtin("italy_power_demand", "classify", "aeon", "UCR ItalyPowerDemand: 67/1029, 1 x 24, 2 classes",
            _classification("ItalyPowerDemand")),
    Builtin("bach_chorales", "music", "music21", "the 371 four-part Bach chorales of music21's corpus as "
            "piano rolls (parsed once, cached)", _bach_chorales),
    Builtin("kdd_tsad_135", "autoencoder", "aeon", "UCR anomaly InternalBleeding16: 7,501 points, first "
            "1,200 normal (train), one labelled anomaly", _kdd_tsad_135),
]}


def available() -> list[Builtin]:
    """The data sets whose package is importable here."""
    import importlib.util
    return [b for b in DATASETS.values() if importlib.util.find_spec(b.package) is not None]


def is_builtin(name: str) -> bool:
    return name in DATASETS


def means_builtin(data: str) -> bool:
    """``data`` names a built-in set and no file: nothing there, or a folder of that name (the output of
    ``grukit tune ... --data nile --out nile`` run in the same place), which is no data file."""
    p = Path(data)
    return is_builtin(data) and (not p.exists() or p.is_dir())


def get(name: str, task: str | None = None) -> Builtin:
    if name not in DATASETS:
        from ..errors import nearest
        raise DataError(f"no such file or built-in data set{nearest(name, DATASETS)}; built-in sets: "
                        f"{', '.join(DATASETS)}", path=name)
    b = DATASETS[name]
    if task is not None and b.task != task:
        raise DataError(f"built-in data set {name!r} is for `grukit train {b.task}`, not {task!r}; sets for "
                        f"{task}: {', '.join(n for n, d in DATASETS.items() if d.task == task)}", path=name)
    import importlib.util
    if importlib.util.find_spec(b.package) is None:
        raise DataError(f"built-in data set {name!r} ships with {b.package}, which is not installed; "
                        f"pip install 'grukit[timeseries]'", path=name)
    return b
