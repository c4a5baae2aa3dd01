"""The scikit-learn estimators pass scikit-learn's own checks and work in its tools."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from grukit.estimators import GRUClassifier, GRUForecaster, GRURegressor

FAST = dict(hidden_size=4, max_epochs=2, batch_size=64, random_state=0)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@parametrize_with_checks([GRURegressor(**FAST), GRUClassifier(**FAST)])
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


def _data(n=60, T=10, F=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, F)).astype("float32")
    return X, (X[:, :, 0].mean(1) > 0).astype(int)


def test_classifier_learns_variable_lengths_and_long_frames():
    import pandas as pd
    X, y = _data(120)
    lengths = np.random.default_rng(1).integers(5, 11, len(X))
    ragged = [X[i, :lengths[i]] for i in range(len(X))]
    y = np.array(["pos" if X[i, :lengths[i], 0].mean() > 0 else "neg" for i in range(len(X))])
    clf = GRUClassifier(hidden_size=16, max_epochs=30, random_state=0).fit(ragged, y)
    assert set(clf.classes_) == {"neg", "pos"} and clf.score(ragged, y) > 0.9
    proba = clf.predict_proba(ragged)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    for i in (0, 7):                     # one sequence alone gives its row of the padded batch (padding is masked)
        np.testing.assert_allclose(clf.predict_proba([ragged[i]])[0], proba[i], atol=1e-5)
    rows = [dict(id=i, t=t, a=ragged[i][t, 0], b=ragged[i][t, 1]) for i in range(len(ragged))
            for t in range(lengths[i])]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)          # shuffled rows
    long_clf = clone(clf).set_params(id_col="id", time_col="t")
    np.testing.assert_array_equal(long_clf.fit(frame, y).predict(frame), clf.predict(ragged))


def test_regressor_in_pipeline_grid_search_cross_val_and_pickle():
    X, _ = _data(80)
    y = X[:, :, 1].sum(1)
    pipe = make_pipeline(FunctionTransformer(lambda a: a * 2.0), GRURegressor(hidden_size=8, max_epochs=5,
                                                                              random_state=0))
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,)
    grid = GridSearchCV(GRURegressor(max_epochs=3, random_state=0), {"hidden_size": [4, 8]}, cv=2).fit(X, y)
    est = grid.best_estimator_
    assert est.model_.encoder.hidden_size == grid.best_params_["hidden_size"]      # set_params reached the model
    scores = grid.cv_results_["mean_test_score"]
    assert scores[0] != scores[1]                                                  # two really different models
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X), est.predict(X), atol=1e-6)
    assert clone(est).get_params() == est.get_params()


def test_forecaster_beats_the_last_value_on_a_sine():
    t = np.arange(300)
    s = np.sin(2 * np.pi * t / 24)
    f = GRUForecaster(lookback=36, horizon=12, hidden_size=16, max_epochs=40, random_state=0).fit(s[:288])
    naive = -np.mean(np.abs(s[288:] - s[287]))
    assert f.predict().shape == (12,)
    assert f.score(s[288:]) > naive
    assert pickle.loads(pickle.dumps(f)).predict().shape == (12,)
    lo, hi = f.predict_interval()
    assert (lo <= f.predict() + 1e-9).all() and (f.predict() <= hi + 1e-9).all() and (lo < hi).any()
    # the forecast task's one entry point, with the training series' scaler
    from grukit.tasks.forecast import forecast_series
    (fc,) = forecast_series(f.model_, f.meta_, f.config_, [s[:288]], ids=["series"])
    np.testing.assert_allclose(f.predict(), fc["point"][:, 0])
    np.testing.assert_allclose(f.predict(s[:280]), forecast_series(f.model_, f.meta_, f.config_, [s[:280]],
                                                                   ids=["series"])[0]["point"][:, 0])
    with pytest.raises(ValueError, match="needs at least 13"):
        GRUForecaster(lookback=36, horizon=12).fit(s[:12])
    short = GRUForecaster(lookback=36, horizon=12, max_epochs=1, random_state=0).fit(s[:30])   # padded windows
    assert short.predict(s[:5]).shape == (12,) and np.isfinite(short.predict(s[:5])).all()


def test_defaults_come_from_the_config_dataclasses():
    """One home for each default: the estimators' defaults are TaskConfig's (ClassifyConfig's pooling) and the
    forecaster's ForecastConfig's."""
    from grukit.config import ClassifyConfig, TaskConfig
    from grukit.tasks.forecast_config import ForecastConfig
    t, c, f = TaskConfig(), ClassifyConfig(), ForecastConfig()
    for est in (GRURegressor(), GRUClassifier()):
        p = est.get_params()
        for k in ("hidden_size", "num_layers", "dropout", "max_epochs", "batch_size", "lr", "weight_decay",
                  "gradient_clip_val", "reset_after", "layer_norm", "bidirectional"):
            assert p[k] == getattr(t, k), (type(est).__name__, k)
        assert p["pooling"] == c.pooling
    p = GRUForecaster().get_params()
    for k in ("lookback", "horizon", "hidden_size", "num_layers", "max_epochs", "batch_size", "lr", "season_length"):
        assert p[k] == getattr(f, k), k


def test_estimators_train_with_fits_guards():
    """The estimators train through train.build_trainer's Trainer and callbacks: a diverging fit stops with
    fit()'s TrainingError (NonFiniteGuard) instead of returning a NaN model."""
    from grukit.errors import TrainingError
    X, _ = _data(40, T=6)
    with pytest.raises(TrainingError, match="training loss became nan"):
        GRURegressor(hidden_size=4, max_epochs=3, lr=1e15, gradient_clip_val=0, random_state=0).fit(
            X, X.sum((1, 2)))
