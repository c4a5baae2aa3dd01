"""Autoencoder anomaly detection on a tiny labelled synthetic series."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grukit.errors import DataError
from grukit.runs import Run
from grukit.train import fit

from tests.conftest import TINY, TOL

TINY = TINY["autoencoder"]


def make_series(path, n=400):
    t = np.arange(n)
    x = np.sin(t * 2 * np.pi / 20)
    label = np.zeros(n, int)
    x[300:310] += 3.0
    label[300:310] = 1
    pd.DataFrame({"t": t, "value": x, "anomaly": label}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_tiny):
    data = make_series(tmp_path_factory.mktemp("ae") / "s.csv")
    return train_tiny("autoencoder", data=str(data), label_col="anomaly", max_epochs=4), data


def test_trains_scores_and_metrics(trained):
    run, _ = trained
    loss = pd.read_csv(run.path / "metrics.csv")["train_loss_epoch"].dropna().to_numpy()
    assert loss[-1] < loss[0]
    m = run.evaluate()
    for k in ("precision", "recall", "F1", "ROC_AUC"):
        assert 0 <= m["grukit"][k] <= 1 and k in m["zscore"]
    assert (run.path / "plots" / "anomaly.png").is_file()


def test_predict_files(trained, tmp_path):
    run, data = trained
    paths = Run(run.path).predict(str(data), tmp_path / "scores.csv")
    df = pd.read_csv(paths[0])
    assert len(df) == 400 and {"score", "anomaly"} <= set(df.columns)
    assert paths[1].suffix == ".png"


def test_bad_inputs(tmp_path):
    make_series(tmp_path / "s.csv", n=30)
    with pytest.raises(DataError, match="too short"):
        fit("autoencoder", data=str(tmp_path / "s.csv"), out=tmp_path / "r", **TINY)
    pd.DataFrame({"value": [1.0, np.nan, 2.0] * 50}).to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(DataError, match="line 3, column 'value'"):
        fit("autoencoder", data=str(tmp_path / "n.csv"), out=tmp_path / "r", **TINY)
    with pytest.raises(DataError, match="did you mean 'anomaly'"):
        fit("autoencoder", data=str(tmp_path / "s.csv"), label_col="anomally", out=tmp_path / "r", **TINY)


def test_event_metrics_by_hand():
    from grukit.tasks.autoencoder import point_adjusted_f1, segments, ucr_hit
    labels = np.zeros(400, int)
    labels[100:110] = 1
    labels[300:304] = 1
    assert segments(labels) == [(100, 110), (300, 304)]
    flagged = np.zeros(400, bool)
    flagged[[105, 200]] = True                        # one step of the first segment and one false alarm
    # adjusted: 10 true positives, 1 false positive, 4 missed -> 2*10 / (11 + 14)
    assert point_adjusted_f1(labels, flagged) == pytest.approx(20 / 25)
    assert point_adjusted_f1(labels, np.zeros(400, bool)) == 0.0
    scores = np.zeros(400)
    scores[250] = 1.0
    assert ucr_hit(labels, scores) == 1.0             # 250 is within 100 of [300, 304)
    assert ucr_hit(labels, scores, margin=20) == 0.0


def test_threshold_from_labelled_validation_series(trained, tmp_path):
    """threshold=f1 takes the best-F1 threshold of a separate labelled series; the run keeps the threshold and
    evaluating a series without a training part reuses it."""
    from grukit.runs import open_run
    from grukit.tasks import autoencoder as ae
    run, data = trained
    valid = make_series(tmp_path / "valid.csv")
    run2 = open_run(run.path)
    run2.config = run2.config.replace(threshold="f1", valid_data=str(valid))
    m = ae.evaluate(run2, run2.models())
    values, labels, *_ = ae.read_values(run2.config, str(valid), run2.meta["roles"])
    v_scores, _ = ae.step_scores(run2.models(), values, run2.meta, run2.config)
    assert m["grukit"]["threshold"] == pytest.approx(ae._best_f1_threshold(labels, v_scores))
    assert {"PA_F1", "UCR_hit"} <= set(m["grukit"]) and {"PA_F1", "UCR_hit"} <= set(m["zscore"])
    stored = Run(run.path).info["threshold"]
    short = tmp_path / "short.csv"
    pd.read_csv(data).iloc[:150].to_csv(short, index=False)            # shorter than the training part
    with pytest.warns(UserWarning, match="no anomalous"):                    # its labels hold no anomaly
        assert Run(run.path).evaluate(str(short))["grukit"]["threshold"] == stored
    with pytest.raises(Exception, match="threshold=f1 needs --valid-data"):
        run2.config.replace(valid_data="")


def test_anomaly_scores_entry_point(trained):
    """anomaly_scores(models, meta, config, values): per-step scores equal a hand computation through forward()
    (windows at stride 1, each step's squared error averaged over the windows covering it, smoothed), flags are
    score > threshold, a 2-member ensemble of one model scores as the model, a wrong width is a ShapeError."""
    import torch
    from grukit.errors import ShapeError
    from grukit.tasks import autoencoder as ae
    run, data = trained
    cols = run.meta["roles"]["columns"]
    values = pd.read_csv(data)[cols].to_numpy()[:120]                         # (120, F)
    (model,) = run.models()
    scores, flags = ae.anomaly_scores([model], run.meta, run.config, values, threshold=0.5)
    z = ((values - np.asarray(run.meta["mean"])) / np.asarray(run.meta["std"])).astype(np.float32)
    W = run.config.window
    wins = torch.from_numpy(np.stack([z[s:s + W] for s in range(len(z) - W + 1)]))
    with torch.no_grad():
        recon, _ = model.eval()({"x": wins})
    err = ((recon - wins) ** 2).sum(-1).numpy()                                 # (N, W)
    total, count = np.zeros(len(z)), np.zeros(len(z))
    for s in range(len(err)):
        total[s:s + W] += err[s]
        count[s:s + W] += 1
    width = run.config.smooth or max(1, W // 16)
    ref = np.convolve(total / count, np.ones(width) / width, mode="same")
    np.testing.assert_allclose(scores, ref, **TOL["float32"])
    np.testing.assert_array_equal(flags, scores > 0.5)
    pair, _ = ae.anomaly_scores([model, model], run.meta, run.config, values, threshold=0.5)
    np.testing.assert_allclose(pair, scores, **TOL["float32"])
    _, default = ae.anomaly_scores([model], run.meta, run.config, values)      # no threshold: a percentile
    assert default.sum() == (scores > np.percentile(scores, run.config.percentile)).sum()
    with pytest.raises(ShapeError, match=rf"expected \(n, {len(cols)}\)"):
        ae.anomaly_scores([model], run.meta, run.config, np.zeros((50, len(cols) + 1)))


def test_labels_without_anomalies_warn(trained, tmp_path):
    """A label column with no positive row after the training part: a warning saying why precision/recall
    are missing (it used to vanish silently)."""
    run, data = trained
    frame = pd.read_csv(data)
    frame["anomaly"] = 0
    frame.to_csv(tmp_path / "clean.csv", index=False)
    with pytest.warns(UserWarning, match=r"no anomalous \(1\) row.*precision, recall and F1 cannot"):
        m = run.evaluate(str(tmp_path / "clean.csv"))
    assert set(m["grukit"]) == {"threshold", "flagged"}
