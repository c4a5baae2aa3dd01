"""Classification on tiny synthetic sequences: npz with lengths, long CSV, predict, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grukit.errors import DataError
from grukit.runs import Run
from grukit.train import fit

TINY = dict(hidden_size=8, conv_channels=8, batch_size=8, progress=False, patience=0, lr=2e-2, val_fraction=0.25,
            schedule="manual", ensemble=1, baselines=())


def make_npz(path, n=40, T=12, F=2, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    lengths = rng.integers(4, T + 1, n)
    X = rng.normal(size=(n, T, F)).astype(np.float32) + y[:, None, None] * 1.5
    for i in range(n):
        X[i, lengths[i]:] = np.nan if i == 0 else 0.0        # padding is never read (even NaN padding)
    np.savez(path, X=X, y=np.where(y == 1, "up", "down"), lengths=lengths)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    data = make_npz(d / "train.npz")
    test = make_npz(d / "test.npz", n=20, seed=1)
    run = fit("classify", data=str(data), test_data=str(test), out=d / "run", max_epochs=8, pooling="mean",
              **TINY)
    return run, data, test


def test_trains_and_evaluates(trained):
    run, _, _ = trained
    loss = pd.read_csv(run.path / "metrics.csv")["train_loss_epoch"].dropna().to_numpy()
    assert loss[-1] < loss[0]
    m = run.evaluate()
    assert m["grukit"]["accuracy"] >= 0.8 and 0 <= m["grukit"]["macro_F1"] <= 1
    assert (run.path / "plots" / "confusion_matrix.png").is_file()


def test_predict_csv(trained, tmp_path):
    run, _, test = trained
    paths = Run(run.path).predict(str(test), tmp_path / "p.csv")
    df = pd.read_csv(paths[0])
    assert len(df) == 20 and set(df["predicted"]) <= {"up", "down"}
    assert np.allclose(df[["p_down", "p_up"]].sum(axis=1), 1, atol=1e-5)


def test_long_csv_and_pooling(tmp_path):
    rows = []
    rng = np.random.default_rng(0)
    for sid in range(24):
        lab = sid % 3
        for t in range(5 + sid % 4):
            rows.append({"id": sid, "time": t, "f1": rng.normal() + lab, "f2": rng.normal(), "label": f"c{lab}"})
    pd.DataFrame(rows).sample(frac=1, random_state=0).to_csv(tmp_path / "long.csv", index=False)
    run = fit("classify", data=str(tmp_path / "long.csv"), out=tmp_path / "run", max_epochs=2,
              pooling="attention", bidirectional=True, evaluate=False, **{**TINY, "baselines": ("minirocket",)})
    assert run.meta["classes"] == ["c0", "c1", "c2"] and run.meta["input_size"] == 2
    m = run.evaluate(str(tmp_path / "long.csv"))
    assert set(m) == {"grukit", "majority_class", "minirocket"}
    assert m["majority_class"]["accuracy"] == pytest.approx(1 / 3)          # 8 series of each of 3 classes
    assert m["minirocket"]["accuracy"] > 0.9                                 # scored on its own training data
    assert all(row["seconds"] >= 0 for row in m.values())
    renamed = pd.read_csv(tmp_path / "long.csv").rename(columns={"id": "seq", "label": "kind"})
    renamed.to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(DataError, match=r"no sequence-id column 'id'.*; the file has columns seq, time, f1, f2, "
                                        r"kind \(name it with --id-col\)"):
        fit("classify", data=str(tmp_path / "renamed.csv"), out=tmp_path / "r2", **TINY)
    with pytest.raises(DataError, match=r"no label column 'label'.*\(name it with --label-col\)"):
        fit("classify", data=str(tmp_path / "renamed.csv"), id_col="seq", out=tmp_path / "r3", **TINY)


def test_bad_inputs(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, X=np.zeros((4, 5, 2)), y=np.arange(4), lengths=np.array([5, 5, 9, 5]))
    with pytest.raises(DataError, match=r"inconsistent sequence lengths: lengths\[2\] = 9"):
        fit("classify", data=str(p), out=tmp_path / "r", **TINY)
    np.savez(p, X=np.zeros((4, 5, 2)), y=np.arange(3))
    with pytest.raises(DataError, match="y has 3 labels but X holds 4"):
        fit("classify", data=str(p), out=tmp_path / "r", **TINY)
    np.savez(p, X=np.zeros((4, 5, 2)), y=np.arange(4), lengths=np.array([5, 5]))
    with pytest.raises(DataError, match="inconsistent sequence lengths"):
        fit("classify", data=str(p), out=tmp_path / "r", **TINY)
    X = np.zeros((4, 5, 2))
    X[1, 2, 0] = np.inf
    np.savez(p, X=X, y=np.arange(4))
    with pytest.raises(DataError, match=r"X\[1, 2, 0\]"):
        fit("classify", data=str(p), out=tmp_path / "r", **TINY)
    pd.DataFrame({"id": [1, 1, 2], "time": [0, 1, 0], "f": [1, "x", 2], "label": [0, 0, 1]}).to_csv(
        tmp_path / "l.csv", index=False)
    with pytest.raises(DataError, match="line 3, column 'f'"):
        fit("classify", data=str(tmp_path / "l.csv"), out=tmp_path / "r", **TINY)
    pd.DataFrame({"id": [1], "time": [0], "f": [1], "lable": [0]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="did you mean 'lable'"):
        fit("classify", data=str(tmp_path / "m.csv"), out=tmp_path / "r", **TINY)
    assert not (tmp_path / "r").exists()


def test_ts_files(tmp_path):
    import aeon
    from pathlib import Path

    from grukit.config import ClassifyConfig
    from grukit.tasks.classify import read_sequences
    ts = Path(aeon.__file__).parent / "datasets" / "data" / "JapaneseVowels" / "JapaneseVowels_TEST.ts"
    if not ts.is_file():
        pytest.skip(f"{ts} is not shipped by this aeon version")
    seqs, y, _ = read_sequences(str(ts), ClassifyConfig())
    assert len(seqs) == 370 and seqs[0].shape[1] == 12 and len(set(y)) == 9
    assert {len(s) for s in seqs} != {len(seqs[0])}           # variable lengths kept, not padded
    (tmp_path / "bad.ts").write_text("@problemName x\n@data\n1,2,:a\n")
    with pytest.raises(DataError, match="bad.ts"):
        read_sequences(str(tmp_path / "bad.ts"), ClassifyConfig())
    head = "@problemName x\n@timeStamps false\n@univariate true\n@classLabel true a b\n@data\n"
    (tmp_path / "v.ts").write_text(head + "1,2,3:a\n1,2,x:b\n")
    with pytest.raises(DataError, match=r"v.ts, line 7: cannot be read as a .ts file: dimension 1: 'x' is not a "
                                        r"number") as e:
        read_sequences(str(tmp_path / "v.ts"), ClassifyConfig())
    assert "TextIOWrapper" not in str(e.value)
    (tmp_path / "d.ts").write_text(head + "1,2,3:a\n1,2,3\n")
    with pytest.raises(DataError, match=r"d.ts, line 7: .*no class label"):
        read_sequences(str(tmp_path / "d.ts"), ClassifyConfig())
    (tmp_path / "e.ts").write_text(head + "1,2,3:a\n1,2,3:4,5,6:b\n")
    with pytest.raises(DataError, match=r"e.ts, line 7: .*2 dimensions; expected 1"):
        read_sequences(str(tmp_path / "e.ts"), ClassifyConfig())



def test_one_series_per_row_with_a_header(tmp_path):
    """A table with a label column and value columns, one series per row (the UCR archive saved with a header,
    Kaggle's ECG sets): read as rows, not refused for a missing id column; NaN after a row's values is a
    shorter series, NaN inside a gap filled with a warning; without the label column (predict) the rows are
    the series; a long-format table still needs its id column."""
    from grukit.data.sequences import read_labelled
    frame = pd.DataFrame({"class": [1, 2, 1], "t0": [0.5, 2.0, 1.0], "t1": [0.25, np.nan, np.nan],
                          "t2": [1.0, np.nan, 3.0]})
    frame.to_csv(tmp_path / "w.csv", index=False)
    with pytest.warns(UserWarning, match=r"1 series have gaps .*first at line 4"):
        seqs, y = read_labelled(tmp_path / "w.csv")
    assert list(y) == ["1", "2", "1"] and [len(s) for s in seqs] == [3, 1, 3]
    np.testing.assert_allclose(seqs[2][:, 0], [1.0, 2.0, 3.0])
    frame.drop(columns="class").to_csv(tmp_path / "x.csv", index=False)
    with pytest.warns(UserWarning, match="gaps"):
        seqs, y = read_labelled(tmp_path / "x.csv", need_labels=False)
    assert y is None and len(seqs) == 3
    with pytest.raises(DataError, match="no sequence-id column 'id'"):
        read_labelled(tmp_path / "x.csv")                                   # labels needed: not a labelled table
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (20, 30)), rng.normal(0, 1, (20, 30)) + np.sin(np.arange(30))]
    train = pd.DataFrame(X, columns=[f"v{i}" for i in range(30)])
    train.insert(0, "label", ["a"] * 20 + ["b"] * 20)
    train.to_csv(tmp_path / "train.csv", index=False)
    run = fit("classify", data=str(tmp_path / "train.csv"), out=tmp_path / "run", evaluate=False,
              **{**TINY, "max_epochs": 2})
    assert run.meta["classes"] == ["a", "b"]

def test_ucr_archive_rows(tmp_path):
    """The UCR archive's headerless rows, label first: 2018's .tsv (NaN padding after shorter series, NaN gaps
    interpolated with a warning), the older space-separated .txt with float labels, a comma .csv whose first
    line is all numbers; a header-led CSV stays long format; a text cell is named by line; a training run reads
    a .tsv pair end to end."""
    from grukit.config import ClassifyConfig
    from grukit.data.sequences import read_labelled
    from grukit.tasks.classify import read_sequences
    (tmp_path / "a.tsv").write_text("1\t0.5\t0.25\t1.0\n-1\t2.0\tNaN\tNaN\n1\t1.0\tNaN\t3.0\n")
    with pytest.warns(UserWarning, match=r"1 series have gaps .* interpolation \(first at line 3\)"):
        seqs, y = read_labelled(tmp_path / "a.tsv")
    assert list(y) == ["1", "-1", "1"] and [len(s) for s in seqs] == [3, 1, 3]
    np.testing.assert_allclose(seqs[2][:, 0], [1.0, 2.0, 3.0])
    assert seqs[0].shape == (3, 1) and seqs[0].dtype == np.float32
    (tmp_path / "b.txt").write_text("  1.0000000e+00  2.5e-01  3.0e-01\n  2.0000000e+00  1.0e+00  2.0e+00\n")
    seqs, y = read_labelled(tmp_path / "b.txt")
    assert list(y) == ["1", "2"] and seqs[1][:, 0].tolist() == [1.0, 2.0]
    (tmp_path / "c.csv").write_text("3,1,2,3\n4,4,5,6\n")
    assert list(read_labelled(tmp_path / "c.csv")[1]) == ["3", "4"]
    (tmp_path / "d.tsv").write_text("1\t0.5\t0.25\n2\t0.5\tabc\n")
    with pytest.raises(DataError, match=r"d.tsv, line 2, column 'value 2': value 'abc' is not a number"):
        read_labelled(tmp_path / "d.tsv")
    (tmp_path / "i.tsv").write_text("1\t0.5\t0.25\n2\t0.5\tinf\n")          # at the end: not padding
    with pytest.raises(DataError, match=r"i.tsv, line 2, column 'value 2': infinite value"):
        read_labelled(tmp_path / "i.tsv")
    (tmp_path / "e.tsv").write_text("label\tx\ty\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"e.tsv, line 1: not UCR archive rows: 'label\\tx\\ty' is not all"):
        read_labelled(tmp_path / "e.tsv")
    head = "@relation toy\n" + "".join(f"@attribute att{i} numeric\n" for i in range(3))
    (tmp_path / "f.arff").write_text(head + "@attribute target {a,b}\n@data\n1.0,2.0,3.0,a\n4.0,5.0,6.0,b\n")
    seqs, y = read_labelled(tmp_path / "f.arff")                 # the same sets' .arff files, through aeon
    assert list(y) == ["a", "b"] and seqs[1][:, 0].tolist() == [4.0, 5.0, 6.0]
    (tmp_path / "g.arff").write_text(head + "@attribute target {a,b}\n@data\n1.0,2.0,3.0,a\n4.0,x,6.0,b\n")
    with pytest.raises(DataError, match=r"g.arff, line 8: cannot be read as an .arff file"):
        read_labelled(tmp_path / "g.arff")
    rng = np.random.default_rng(0)
    for part, n in (("TRAIN", 24), ("TEST", 12)):
        rows = []
        for i in range(n):
            s = rng.normal(0, 0.1, 16)
            s[3 if i % 2 else 11] += 3
            rows.append("\t".join([str(1 + i % 2)] + [f"{v:.4f}" for v in s]))
        (tmp_path / f"Toy_{part}.tsv").write_text("\n".join(rows) + "\n")
    seqs, y, _ = read_sequences(str(tmp_path / "Toy_TRAIN.tsv"), ClassifyConfig())
    assert len(seqs) == 24 and set(y) == {"1", "2"}
    run = fit("classify", data=str(tmp_path / "Toy_TRAIN.tsv"), test_data=str(tmp_path / "Toy_TEST.tsv"),
              out=tmp_path / "run", max_epochs=30, **TINY)
    assert run.evaluate()["grukit"]["accuracy"] >= 0.9


def test_long_format_with_time_stamps(tmp_path):
    """A long-format table whose time column holds time stamps (a sensor log), rows shuffled: each sequence is
    read in time order (the column was refused as non-numeric before)."""
    from grukit.data.sequences import read_labelled
    rows = [{"id": f"r{i}", "time": str(pd.Timestamp("2024-03-01 10:00") + pd.Timedelta(minutes=i, seconds=k)),
             "acc": float(k), "label": "a" if i % 2 else "b"} for i in range(4) for k in range(6)]
    pd.DataFrame(rows).sample(frac=1, random_state=0).to_csv(tmp_path / "log.csv", index=False)
    seqs, y = read_labelled(tmp_path / "log.csv")
    assert len(seqs) == 4 and all(s[:, 0].tolist() == [0, 1, 2, 3, 4, 5] for s in seqs)


def test_a_folder_named_like_a_builtin_does_not_hide_it(tmp_path, monkeypatch):
    """`grukit tune classify --data japanese_vowels --out japanese_vowels` made that folder in the working
    directory, and every trial then failed reading it ("is a directory"): a folder without audio in it is
    never a classification file, so the built-in set is meant, for training and for its test split."""
    pytest.importorskip("aeon")
    from grukit.config import ClassifyConfig
    from grukit.tasks.classify import _eval_data, read_sequences
    monkeypatch.chdir(tmp_path)
    (tmp_path / "italy_power_demand" / "trials").mkdir(parents=True)
    cfg = ClassifyConfig(data="italy_power_demand")
    seqs, y, name = read_sequences("italy_power_demand", cfg)
    assert name == "italy_power_demand" and len(seqs) == 67 and len(y) == 67
    test, _, _ = _eval_data(type("R", (), {"config": cfg})(), None)
    assert len(test) == 1029                                          # its official test split
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_sequences("mine", cfg)
