"""examples/classify_suite.py end to end on a tiny folder of .ts pairs: finds the pairs, trains with the given
overrides, scores the baselines on the same split, writes the table, the scatter plot and the per-member
accuracies."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _suite():
    spec = importlib.util.spec_from_file_location("classify_suite", ROOT / "examples" / "classify_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_ts(path: Path, n: int, seed: int) -> None:
    """Univariate .ts file: class 'a' a bump early, class 'b' a bump late, length 20."""
    rng = np.random.default_rng(seed)
    lines = ["@problemName toy", "@timeStamps false", "@univariate true", "@classLabel true a b", "@data"]
    for i in range(n):
        s = rng.normal(0, 0.1, 20)
        c = 5 if i % 2 == 0 else 15
        s[c - 2:c + 3] += 3
        lines.append(",".join(f"{v:.4f}" for v in s) + ":" + ("a" if i % 2 == 0 else "b"))
    path.write_text("\n".join(lines) + "\n")


def test_suite_on_a_folder_of_ts_pairs(tmp_path):
    pytest.importorskip("aeon")
    suite = _suite()
    data = tmp_path / "data" / "Toy"
    data.mkdir(parents=True)
    _write_ts(data / "Toy_TRAIN.ts", 16, 0)
    _write_ts(data / "Toy_TEST.ts", 10, 1)
    (data / "Lonely_TRAIN.ts").write_text("")                 # no _TEST partner: not a pair
    assert [p[0] for p in suite.ts_pairs(tmp_path / "data")] == ["Toy"]
    other = tmp_path / "other"
    other.mkdir()
    for part in ("TRAIN", "TEST"):                             # .npz pairs too, never a .ts with an .npz
        np.savez(other / f"Mfcc_{part}.npz", X=np.zeros((4, 5, 2)), y=np.array(list("abab")), lengths=[5, 4, 3, 5])
    np.savez(other / "Mixed_TRAIN.npz", X=np.zeros((2, 3)), y=np.array(list("ab")))
    (other / "Mixed_TEST.ts").write_text("")
    assert suite.ts_pairs(other) == [("Mfcc", str(other / "Mfcc_TRAIN.npz"), str(other / "Mfcc_TEST.npz"))]
    ucr = tmp_path / "UCRArchive_2018" / "Toy"                   # the 2018 archive's .tsv pairs; a set found
    ucr.mkdir(parents=True)                                     # as .ts beside them is not taken twice
    for part in ("TRAIN", "TEST"):
        (ucr / f"Toy_{part}.tsv").write_text("1\t0.5\t0.25\n2\t1.5\t0.75\n")
        (ucr / f"Toy_{part}.ts").write_text("")
        (ucr / f"Gun_{part}.tsv").write_text("1\t0.5\t0.25\n")
        (ucr / f"Ecg_{part}.csv").write_text("label,t0,t1\n1,0.5,0.25\n")
    assert suite.ts_pairs(tmp_path / "UCRArchive_2018") == [
        ("Toy", str(ucr / "Toy_TRAIN.ts"), str(ucr / "Toy_TEST.ts")),
        ("Gun", str(ucr / "Gun_TRAIN.tsv"), str(ucr / "Gun_TEST.tsv")),
        ("Ecg", str(ucr / "Ecg_TRAIN.csv"), str(ucr / "Ecg_TEST.csv"))]
    out = tmp_path / "out"
    rc = suite.main([str(tmp_path / "data"), "--no-packaged", "--out", str(out), "--set", "train_steps=20",
                     "--set", "ensemble=2", "--set", "hidden_size=8", "--set", "conv_channels=8"])
    assert rc == 0
    table = pd.read_csv(out / "suite.csv")
    row = table[table["dataset"] == "Toy"].iloc[0]
    assert (row["n_train"], row["n_test"], row["length"], row["classes"], row["members"]) == (16, 10, 20, 2, 2)
    for col in ("acc_grukit", "acc_minirocket", "acc_dtw_1nn", "acc_majority_class", "acc_grukit_1"):
        assert 0 <= row[col] <= 1, col
    assert row["acc_dtw_1nn"] == 1.0 and row["acc_majority_class"] == 0.5   # the bumps are far apart; 5/5 split
    assert row["train_cpu_s"] > 0
    mean = table[table["dataset"] == "MEAN"].iloc[0]
    assert mean["acc_grukit"] == pytest.approx(row["acc_grukit"])
    assert (out / "suite.png").stat().st_size > 0 and "| Toy |" in (out / "suite.md").read_text()
    with pytest.raises(SystemExit, match="exists; pass another --out"):
        suite.main([str(tmp_path / "data"), "--no-packaged", "--out", str(out)])
