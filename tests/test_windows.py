"""Forecast windows: validation targets are never training targets."""
import numpy as np
import pytest

from grukit.data.windows import fold_shifts, split_origins, train_origins
from grukit.errors import ConfigError


@pytest.mark.parametrize("end,L,H,frac", [(76, 36, 24, 0.2), (144, 24, 12, 0.2), (700, 168, 48, 0.1),
                                          (40, 12, 6, 0.5), (300, 24, 12, 0.2)])
def test_validation_targets_are_unseen_in_training(end, L, H, frac):
    train, val = split_origins(end, L, H, 0, frac)
    assert len(train) and len(val)
    seen = {t for o in train for t in range(o, o + H)}
    assert not seen & {t for o in val for t in range(o, o + H)}
    assert val[-1] == end - H                      # the last validation window ends at the held-out tail
    assert set(val) <= set(train_origins(end, L, H))


def test_short_series_train_on_padded_lookbacks_before_validation():
    train, val = split_origins(76, 36, 24, 0, 0.2)      # nile: 100 years, 24 held out
    assert list(val) == [49, 50, 51, 52]
    assert list(train) == list(range(1, 26))            # lookback shorter than 36 points: padded and masked


def test_too_short_for_both_trains_on_everything():
    train, val = split_origins(30, 12, 12, 0, 0.2)      # validation 17..18, training 1..5 with padded lookbacks
    assert list(val) == [17, 18] and list(train) == [1, 2, 3, 4, 5]
    train, val = split_origins(14, 6, 12, 0, 0.2)       # origins 1..2: no room for a training target before 2
    assert list(train) == [1, 2] and len(val) == 0
    train, val = split_origins(30, 12, 12, 0, 0.0)
    assert list(train) == list(range(12, 19)) and len(val) == 0


def test_rolling_origin_folds_end_where_they_should():
    # sunspots' 285 points before the test tail, lookback 36, horizon 24: folds one horizon apart
    assert fold_shifts(285, 36, 24, 3) == [0, 24, 48]
    folds = [split_origins(285 - s, 36, 24, 0, 0.2) for s in (0, 24, 48)]
    # normal fold: origins 36..261, the last ceil(0.2 * 226) = 46 validate; earlier folds likewise on 261, 237 points
    assert [(int(v[0]), int(v[-1])) for _, v in folds] == [(216, 261), (197, 237), (178, 213)]
    assert [(int(t[0]), int(t[-1])) for t, _ in folds] == [(36, 192), (36, 173), (36, 154)]
    # nile (76 points): a horizon apart the earliest fold would lose half its training windows; 7 apart it keeps
    # 14 of the normal fold's 25 (origins 1..14 before validation origin 38)
    assert fold_shifts(76, 36, 24, 3) == [0, 7, 14]
    t, v = split_origins(62, 36, 24, 0, 0.2)
    assert list(v) == [38] and list(t) == list(range(1, 15))
    assert fold_shifts(76, 36, 24, 2, step=5) == [0, 5] and fold_shifts(76, 36, 24, 1) == [0]


@pytest.mark.parametrize("end,L,H,k,step", [(285, 36, 24, 3, 0), (76, 36, 24, 3, 0), (120, 36, 24, 4, 0),
                                            (90, 36, 24, 3, 0), (300, 24, 12, 5, 12)])
def test_no_fold_validation_target_is_its_training_target_or_in_the_test_tail(end, L, H, k, step):
    shifts = fold_shifts(end, L, H, k, step)
    assert len(shifts) == k and shifts[0] == 0 and shifts == sorted(set(shifts))
    for s in shifts:
        train, val = split_origins(end - s, L, H, 0, 0.2)
        assert len(train) and len(val)
        seen = {t for o in train for t in range(o, o + H)}
        targets = {t for o in val for t in range(o, o + H)}
        assert not seen & targets and max(targets) == end - s - 1 < end


def test_folds_that_do_not_fit_name_the_length_and_what_is_needed():
    with pytest.raises(ConfigError, match=r"^val_origins=3, val_step=24: nile has 76 points before the held-out "
                                          r"test part; 3 folds 24 apart need at least 102 points.*fold ending at "
                                          r"point 52 has none; a fold needs 54 or more points"):
        fold_shifts(76, 36, 24, 3, step=24, name="nile")
    with pytest.raises(ConfigError, match="has 20 points .* too few for one training and one validation window"):
        fold_shifts(20, 12, 12, 2)
    with pytest.raises(ConfigError, match="needs a validation split in each fold"):
        fold_shifts(285, 36, 24, 3, val_fraction=0.0)


def test_encoding_statistics_come_from_points_before_the_first_validation_target(tmp_path):
    import pandas as pd

    from grukit.config import ForecastConfig
    from grukit.tasks.forecast import prepare

    # a level shift inside the validation part: a scaler fitted on it would tell the model the new level
    y = np.r_[np.full(60, 10.0) + np.sin(np.arange(60)), np.full(40, 50.0)]
    pd.DataFrame({"y": y}).to_csv(tmp_path / "s.csv", index=False)
    cfg = ForecastConfig(data=str(tmp_path / "s.csv"), lookback=12, horizon=4, transform="none", val_fraction=0.2)
    meta = prepare(cfg).meta
    _, val = split_origins(96, 12, 4, 0, 0.2)          # 100 points, 4 held out for the test
    first = int(val[0])
    assert first == 76                                  # origins 12..92: the last ceil(0.2 * 81) = 17, 76..92
    (mean,), (std,) = meta["scalers"]["series"]["mean"], meta["scalers"]["series"]["std"]
    assert mean == pytest.approx(y[:first].mean()) and std == pytest.approx(y[:first].std())
    shifted = prepare(cfg.replace(fold_shift=10)).meta["scalers"]["series"]["mean"][0]   # an earlier fold: its own
    assert shifted == pytest.approx(y[:int(split_origins(86, 12, 4, 0, 0.2)[1][0])].mean())
