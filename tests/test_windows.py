"""Forecast windows: validation targets are never training targets."""
import numpy as np
import pytest

from grukit.data.windows import split_origins, train_origins


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
