"""The run's metrics CSV: appends whole lines, rewrites atomically when a column appears, keeps resumed rows."""
import csv

from grukit.callbacks import AtomicCSVLogger


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_appends_rows_and_rewrites_when_a_column_appears(tmp_path):
    w = AtomicCSVLogger(str(tmp_path), name="", version="").experiment
    w.log_metrics({"epoch": 0, "train_loss": 1.5}, step=0)
    w.save()
    w.log_metrics({"epoch": 1, "train_loss": 1.25}, step=1)
    w.save()
    rows = _rows(w.metrics_file_path)
    assert [(r["epoch"], r["train_loss"]) for r in rows] == [("0", "1.5"), ("1", "1.25")]
    w.log_metrics({"epoch": 1, "val_loss": 0.75}, step=1)        # a new column: the header is rewritten
    w.save()
    rows = _rows(w.metrics_file_path)
    assert list(rows[0]) == ["epoch", "step", "train_loss", "val_loss"]
    assert [r["val_loss"] for r in rows] == ["", "", "0.75"]
    w.log_metrics({"epoch": 2, "train_loss": 1.0, "val_loss": 0.5}, step=2)
    w.save()
    assert [(r["epoch"], r["val_loss"]) for r in _rows(w.metrics_file_path)][-1] == ("2", "0.5")


def test_resume_keeps_earlier_epochs_and_drops_a_cut_line(tmp_path):
    w = AtomicCSVLogger(str(tmp_path), name="", version="").experiment
    for e in range(3):
        w.log_metrics({"epoch": e, "train_loss": 3.0 - e}, step=e)
        w.save()
    with open(w.metrics_file_path, "a", encoding="utf-8") as f:
        f.write("3,3")                                            # a kill in the middle of an append
    w2 = AtomicCSVLogger(str(tmp_path), name="", version="").experiment
    w2.log_metrics({"epoch": 2, "train_loss": 0.5}, step=2)      # resumed from the end of epoch 1
    w2.save()
    rows = _rows(w2.metrics_file_path)
    assert [(r["epoch"], r["train_loss"]) for r in rows] == [("0", "3.0"), ("1", "2.0"), ("2", "0.5")]
