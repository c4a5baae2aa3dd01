"""scikit-learn estimators: GRURegressor, GRUClassifier and GRUForecaster.

They follow scikit-learn to the letter: ``__init__`` stores its arguments unchanged (the names are those of
:mod:`grukit.config`, with scikit-learn's ``random_state`` for ``seed``), fitted state ends in ``_``, and they
clone, pickle and work in ``Pipeline`` / ``GridSearchCV`` / ``cross_val_score``. Their defaults are the config
dataclasses' (:class:`~grukit.config.TaskConfig`, ``ClassifyConfig.pooling``, ``ForecastConfig``): one home for
each default. Training runs through the shared :class:`~grukit.tasks.base.SequenceTask` step and the Trainer of
:func:`grukit.train.build_trainer` with fit()'s callbacks (non-finite guard, gradient watch, graceful stop), writing
no files (no loop of their own); prediction runs through
:func:`grukit.tasks.base.infer` (``GRUClassifier`` through the classify task's entry point
:func:`grukit.tasks.classify.classify_sequences`, which calls it).

Sequence input ``X`` may be:

* a 3-D array ``(N, T, F)``;
* a 2-D array ``(N, T)``: N univariate sequences (so scikit-learn's 2-D tools and checks apply);
* a list of ``(T_i, F)`` (or ``(T_i,)``) arrays of different lengths: padded, with lengths given to the GRU
  so padding never reaches the state;
* a pandas DataFrame in long format: one row per (sequence, step), ``id_col`` naming the sequence and
  ``time_col`` (optional) the order; the other numeric columns are features. Sequences come out in sorted
  id order, which ``y`` must follow.

scikit-learn checks that cannot apply: none are skipped in the test suite; the estimators declare
``poor_score`` (a few epochs on the checks' tiny random sets need not reach the checks' accuracy bar) and
``non_deterministic = False`` (with ``random_state`` set, fits are reproducible).
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from .config import ClassifyConfig, TaskConfig
from .tasks.forecast_config import ForecastConfig

__all__ = ["GRURegressor", "GRUClassifier", "GRUForecaster"]

_T, _C, _F = TaskConfig(), ClassifyConfig(), ForecastConfig()     # the single home of every default


# ---------------------------------------------------------------- input conversion
def _sequences(est, X, fitting: bool):
    """``X`` in any accepted form -> (padded (N, T, F) float32 array, lengths (N,) or None)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame) and est.id_col is not None:
        if est.id_col not in X.columns:
            raise ValueError(f"X has no column {est.id_col!r} (id_col); its columns are {list(X.columns)}")
        frame = X.sort_values([est.id_col] + ([est.time_col] if est.time_col in X.columns else []),
                              kind="stable")
        feats = [c for c in frame.columns if c not in (est.id_col, est.time_col)]
        X = [check_array(g[feats].to_numpy(), dtype=np.float32, input_name="X")
             for _, g in frame.groupby(est.id_col, sort=True)]
    two_d = False
    if isinstance(X, (list, tuple)) and len(X) and not np.isscalar(X[0]) and \
            len({np.shape(x)[0] for x in X}) > 1:
        seqs = [check_array(np.asarray(x).reshape(len(x), -1), dtype=np.float32, input_name="X") for x in X]
        lengths = np.array([len(s) for s in seqs])
        F = seqs[0].shape[1]
        if any(s.shape[1] != F for s in seqs):
            raise ValueError(f"every sequence must have {F} features, got {sorted({s.shape[1] for s in seqs})}")
        arr = np.zeros((len(seqs), lengths.max(), F), dtype=np.float32)   # (N, T_max, F)
        for i, s in enumerate(seqs):
            arr[i, :len(s)] = s
    else:
        arr = check_array(X, dtype=np.float32, allow_nd=True, input_name="X", ensure_min_features=1)
        two_d = arr.ndim == 2
        if two_d:
            arr = arr[:, :, None]                                          # (N, T) -> (N, T, 1)
        elif arr.ndim != 3:
            raise ValueError(f"X must be (N, T, F), (N, T) or a list of (T_i, F) arrays, got {arr.ndim}-D")
        lengths = None
    n_feat = arr.shape[2]
    if fitting:
        est.n_features_in_ = arr.shape[1] if two_d else n_feat   # scikit-learn's meaning for 2-D input
        est.n_input_channels_ = n_feat
        est.input_2d_ = two_d          # fitted on (N, T) samples: T is n_features_in_
    else:
        expected = est.n_input_channels_
        if n_feat != expected:
            raise ValueError(f"X has {n_feat} features per step, but {type(est).__name__} is expecting "
                             f"{expected} features as input")
        if two_d and est.input_2d_ and arr.shape[1] != est.n_features_in_:
            raise ValueError(f"X has {arr.shape[1]} features, but {type(est).__name__} is expecting "
                             f"{est.n_features_in_} features as input")
    return arr, lengths


class _GRUEstimatorBase(BaseEstimator):
    _kind = "regression"

    def __init__(self, hidden_size=_T.hidden_size, num_layers=_T.num_layers, bidirectional=_T.bidirectional,
                 dropout=_T.dropout, layer_norm=_T.layer_norm, reset_after=_T.reset_after, pooling=_C.pooling,
                 max_epochs=_T.max_epochs, batch_size=_T.batch_size, lr=_T.lr, weight_decay=_T.weight_decay,
                 gradient_clip_val=_T.gradient_clip_val, random_state=None, id_col=None, time_col=None,
                 verbose=False):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.layer_norm = layer_norm
        self.reset_after = reset_after
        self.pooling = pooling
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.gradient_clip_val = gradient_clip_val
        self.random_state = random_state
        self.id_col = id_col
        self.time_col = time_col
        self.verbose = verbose

    def _adjust_tags(self, tags):
        """Called by the concrete classes after their mixin filled in its tags."""
        tags.non_deterministic = False
        tags.target_tags.multi_output = self._kind == "regression"
        if tags.regressor_tags is not None:
            tags.regressor_tags.poor_score = True
        if tags.classifier_tags is not None:
            tags.classifier_tags.poor_score = True
        return tags

    # ------------------------------------------------------------------ training
    def _config(self):
        if self.pooling not in ("last", "mean", "attention"):
            raise ValueError(f"pooling={self.pooling!r}: expected last, mean or attention")
        seed = self.random_state if isinstance(self.random_state, numbers.Integral) else \
            int(np.random.RandomState(self.random_state).randint(2 ** 31 - 1))
        return TaskConfig.from_dict(dict(
            hidden_size=self.hidden_size, num_layers=self.num_layers, bidirectional=self.bidirectional,
            dropout=self.dropout if self.num_layers > 1 else 0.0, layer_norm=self.layer_norm,
            reset_after=self.reset_after, max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr,
            weight_decay=self.weight_decay, gradient_clip_val=self.gradient_clip_val, seed=seed,
            lr_schedule="none", val_fraction=0.0, patience=0, progress=bool(self.verbose)),
            source=type(self).__name__)                           # no validation split: no early stopping

    def _check_y(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")

    def _fit_arrays(self, arr, lengths, target, out_size: int):
        import torch

        from .callbacks import GracefulStop
        from .data.batching import DictDataset, loader
        from .train import build_trainer, quiet_lightning

        cfg = self._config()
        meta = {"input_size": arr.shape[2], "out_size": out_size, "pooling": self.pooling, "has_val": False,
                "kind": self._kind}
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            from .tasks.estimator_task import EstimatorTask
            self.model_ = EstimatorTask(cfg, meta)
            cols = {"x": arr, "y": target}
            if lengths is not None:
                cols["lengths"] = lengths
            train = loader(DictDataset(**cols), cfg.batch_size, True, 0, cfg.seed)
            quiet_lightning()
            trainer = build_trainer(cfg, None, monitor=self.model_.monitor)   # fit()'s Trainer, guards; no files
            trainer.fit(self.model_, train_dataloaders=train)
            stop = next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)
            if stop is not None and stop.signal_received is not None:
                raise KeyboardInterrupt(f"{type(self).__name__}.fit stopped by signal {stop.signal_received}")
        self.model_.eval()
        return self

    def _forward(self, X):
        import torch

        from .tasks.base import infer
        check_is_fitted(self, "model_")
        arr, lengths = _sequences(self, X, fitting=False)
        inputs = {"x": torch.from_numpy(arr)}
        if lengths is not None:
            inputs["lengths"] = torch.from_numpy(lengths)
        (out,) = infer(self.model_, [inputs])
        return out.numpy()


class GRURegressor(RegressorMixin, _GRUEstimatorBase):
    """Sequence -> value(s): a GRU, pooling over time (``last``, ``mean``, ``attention``) and a linear layer.

    ``y`` is ``(N,)`` or ``(N, K)``; targets are standardised inside and predictions returned in their units.
    """

    def __sklearn_tags__(self):
        return self._adjust_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        self._check_y(y)
        arr, lengths = _sequences(self, X, fitting=True)
        y = check_array(y, ensure_2d=False, dtype=np.float32, input_name="y")
        if len(y) != len(arr):
            raise ValueError(f"X has {len(arr)} sequences but y has {len(y)} targets")
        self.y_1d_ = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        self.y_mean_, self.y_scale_ = y2.mean(0), np.where(y2.std(0) > 0, y2.std(0), 1.0)
        return self._fit_arrays(arr, lengths, ((y2 - self.y_mean_) / self.y_scale_).astype(np.float32),
                                y2.shape[1])

    def predict(self, X):
        out = self._forward(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self.y_1d_ else out


class GRUClassifier(ClassifierMixin, _GRUEstimatorBase):
    """Sequence -> class: a GRU, pooling over time and a softmax layer; ``classes_`` may be any labels."""
    _kind = "classification"

    def __sklearn_tags__(self):
        return self._adjust_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        self._check_y(y)
        arr, lengths = _sequences(self, X, fitting=True)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if len(y) != len(arr):
            raise ValueError(f"X has {len(arr)} sequences but y has {len(y)} labels")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        return self._fit_arrays(arr, lengths, y_idx.astype(np.int64), len(self.classes_))

    def predict_proba(self, X):
        """Class probabilities (N, K), columns in ``classes_`` order, through the classify task's one inference
        entry point :func:`grukit.tasks.classify.classify_sequences` (inputs already scaled: ``normalize=none``)."""
        from .tasks.classify import classify_sequences
        check_is_fitted(self, "model_")
        arr, lengths = _sequences(self, X, fitting=False)
        seqs = list(arr) if lengths is None else [a[:n] for a, n in zip(arr, lengths)]   # (T_i, F) each
        meta = {"input_size": self.n_input_channels_, "classes": self.classes_.tolist(), "normalize": "none"}
        return classify_sequences(self.model_, meta, seqs).astype(np.float64)

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class GRUForecaster(_GRUEstimatorBase):
    """Series -> its next ``horizon`` values: the forecast task's model (:class:`~grukit.tasks.forecast.ForecastTask`:
    padded, masked lookback windows, window normalisation, a seasonal-naive skip the GRU corrects, quantile outputs),
    trained on the windows :func:`~grukit.tasks.forecast.prepare_series` builds and forecasting through
    :func:`~grukit.tasks.forecast.forecast_series`, the task's one inference entry point.

    ``fit(y)`` takes a series ``(n,)`` or ``(n, C)`` with ``n > horizon`` (shorter than ``lookback + horizon`` trains
    on padded windows); ``predict(y=None)`` forecasts the ``horizon`` steps after ``y`` (default: after the
    training series; any length >= 1), shape ``(horizon,)`` or ``(horizon, C)``; ``predict_interval`` gives the
    outer quantiles. ``score(y_future, y)`` is the negative mean absolute error of that forecast. Not a
    scikit-learn regressor (its input is one series, not N samples), so scikit-learn's estimator checks do not
    apply to it; clone, get_params and pickle do.
    """

    def __init__(self, lookback=_F.lookback, horizon=_F.horizon, hidden_size=_F.hidden_size,
                 num_layers=_F.num_layers, bidirectional=_F.bidirectional, dropout=_F.dropout,
                 layer_norm=_F.layer_norm, reset_after=_F.reset_after, pooling=_C.pooling, max_epochs=_F.max_epochs,
                 batch_size=_F.batch_size, lr=_F.lr, weight_decay=_F.weight_decay,
                 gradient_clip_val=_F.gradient_clip_val, season_length=_F.season_length, random_state=None,
                 verbose=False):
        super().__init__(hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         dropout=dropout, layer_norm=layer_norm, reset_after=reset_after, pooling=pooling,
                         max_epochs=max_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         gradient_clip_val=gradient_clip_val, random_state=random_state, verbose=verbose)
        self.lookback = lookback
        self.horizon = horizon
        self.season_length = season_length

    def _series(self, y):
        y = check_array(np.asarray(y, dtype=np.float64).reshape(len(y), -1), dtype=np.float64, input_name="y")
        return y                                                                # (n, C)

    def fit(self, y, X=None):  # noqa: ARG002 - X is accepted for Pipeline compatibility, unused
        import torch

        from .callbacks import GracefulStop
        from .data.panel import Series
        from .tasks.forecast import ForecastTask, prepare_series
        from .train import build_trainer, quiet_lightning

        s = self._series(y)
        n, C = s.shape
        if n < self.horizon + 1:
            raise ValueError(f"the series has {n} steps; horizon={self.horizon} needs at least {self.horizon + 1}")
        base = self._config().to_dict()
        cfg = ForecastConfig.from_dict(dict(
            {k: base[k] for k in ("hidden_size", "num_layers", "bidirectional", "dropout", "layer_norm",
                                  "reset_after", "max_epochs", "batch_size", "lr", "weight_decay",
                                  "gradient_clip_val", "seed", "lr_schedule", "val_fraction", "patience",
                                  "progress")},
            lookback=self.lookback, horizon=self.horizon, season_length=self.season_length, baselines=()),
            source=type(self).__name__)
        roles = {"time_col": "", "target": [f"y{c}" for c in range(C)] if C > 1 else ["y"], "known": [],
                 "past": [], "id_col": "", "layout": "long"}
        one = Series("series", None, s, np.zeros((n, 0)), np.zeros((n, 0)), n)
        prepared = prepare_series(cfg, [one], roles, type(self).__name__, hold=0)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.model_ = ForecastTask(cfg, prepared.meta)
            quiet_lightning()
            trainer = build_trainer(cfg, None, monitor=self.model_.monitor)   # fit()'s Trainer, guards; no files
            trainer.fit(self.model_, train_dataloaders=prepared.train)
            stop = next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)
            if stop is not None and stop.signal_received is not None:
                raise KeyboardInterrupt(f"{type(self).__name__}.fit stopped by signal {stop.signal_received}")
        self.model_.eval()
        self.config_, self.meta_ = cfg, prepared.meta
        self.y_1d_ = np.ndim(y) == 1
        self.n_input_channels_ = self.n_features_in_ = C
        self.history_ = s
        return self

    def _forecast(self, y):
        from .tasks.forecast import forecast_series
        check_is_fitted(self, "model_")
        hist = self.history_ if y is None else self._series(y)
        if hist.shape[1] != self.n_input_channels_:
            raise ValueError(f"y has {hist.shape[1]} columns, but {type(self).__name__} was fitted on "
                             f"{self.n_input_channels_}")
        (fc,) = forecast_series(self.model_, self.meta_, self.config_, [hist], ids=["series"])
        return fc

    def _shape(self, out):
        return out[:, 0] if self.y_1d_ else out

    def predict(self, y=None):
        return self._shape(self._forecast(y)["point"])

    def predict_interval(self, y=None):
        """The outer quantiles (``lo``, ``hi``) of the forecast, each shaped like ``predict``'s."""
        fc = self._forecast(y)
        return self._shape(fc["lo"]), self._shape(fc["hi"])

    def score(self, y_future, y=None):
        pred = self.predict(y)
        return -float(np.mean(np.abs(np.asarray(y_future, dtype=np.float64).reshape(pred.shape) - pred)))
