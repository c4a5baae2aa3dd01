"""Forecast windows: validation targets are never training targets."""
import numpy as np
import pytest

from grukit.data.windows import fold_shifts, needs_fill, split_origins, train_origins
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


def test_scarce_data_fills_each_series_to_a_lookback_of_windows():
    """fill: a series just long enough for a few full lookbacks keeps at least L windows (the earliest padded)
    instead of those few alone; the count never falls as the series grows. Lynx at the defaults (90 points,
    lookback 36, horizon 24) once trained on one window."""
    counts = [len(train_origins(end, 36, 24, fill=True)) for end in range(25, 200)]
    assert counts == sorted(counts) and counts[0] == 1
    assert all(c >= min(36, end - 24) for c, end in zip(counts, range(25, 200)))
    assert list(train_origins(200, 36, 24, fill=True)) == list(range(36, 177))     # long: full lookbacks only
    assert list(train_origins(95, 36, 24, fill=True)) == list(range(36, 72))       # exactly 36 full ones
    assert list(train_origins(90, 36, 24, fill=True)) == list(range(31, 67))       # 31 full, 5 padded
    assert list(train_origins(90, 36, 24)) == list(range(36, 67))                  # without: the 31 full ones
    train, val = split_origins(90, 36, 24, 0, 0.2)                                  # lynx's training part
    assert list(train) == [36] and list(val) == list(range(60, 67))               # one window without fill
    train, val = split_origins(90, 36, 24, 0, 0.2, fill=True)
    assert list(train) == list(range(1, 36)) and list(val) == list(range(59, 67))
    seen = {t for o in train for t in range(o, o + 24)}
    assert not seen & {t for o in val for t in range(o, o + 24)}
    train, val = split_origins(76, 36, 24, 0, 0.2, fill=True)                       # nile: 17 full origins
    assert list(val) == list(range(45, 53)) and list(train) == list(range(1, 22))


def test_fill_only_where_all_the_series_together_lack_full_windows():
    """needs_fill counts full-lookback training windows over every series (after the validation split): a
    single short series fills, a panel with windows to spare (M4 Weekly's short series among long ones) does
    not, and neither does one long series."""
    assert needs_fill([90], 36, 24, 0, 0.2)                    # lynx: 1 full window < 36
    assert needs_fill([120], 36, 24, 0, 0.2)                   # airline: 25 full windows before validation
    assert not needs_fill([285], 36, 24, 0, 0.2)               # sunspots: 157
    assert not needs_fill([90] * 40, 36, 24, 0, 0.2)           # 40 such series: 40 full windows
    assert not needs_fill([80] + [900] * 5, 52, 13, 150, 0.1)  # a short weekly series beside long ones
    assert fold_shifts(90, 36, 24, 3) == [0, 18, 36]           # lynx's folds without and with fill
    assert fold_shifts(90, 36, 24, 3, fill=True) == [0, 8, 16]


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
