"""Pareto tools against hand-computed values."""
import numpy as np
import pytest

from pipeline.search.pareto import (crowding_distance, hypervolume, non_dominated_sort,
                                    pareto_front, select_by_rank)

# (GFLOPs, score): A B C D E
COST = [1.0, 2.0, 3.0, 4.0, 2.0]
SCORE = [1.0, 3.0, 2.0, 4.0, 1.0]


def test_layers():
    layers = non_dominated_sort(COST, SCORE)
    assert [l.tolist() for l in layers] == [[0, 1, 3], [2, 4]]


def test_front_order_and_duplicates():
    assert pareto_front(COST, SCORE).tolist() == [0, 1, 3]
    # An exact duplicate is not dominated by its twin; a same-cost lower score is.
    assert pareto_front([1, 1, 1], [2, 2, 1]).tolist() == [0, 1]


def test_hypervolume_hand_computed():
    # A(1,1) B(2,3) D(4,4) against (5, 0): 1*1 + 2*3 + 1*4
    assert hypervolume(COST, SCORE, (5.0, 0.0)) == pytest.approx(11.0)
    # Only B improves on (3, 1.5): (3-2) * (3-1.5)
    assert hypervolume(COST, SCORE, (3.0, 1.5)) == pytest.approx(1.5)
    assert hypervolume(COST, SCORE, (0.5, 0.0)) == 0.0
    assert hypervolume([], [], (1.0, 0.0)) == 0.0
    # Adding a dominated point changes nothing; a new front point adds its exclusive area.
    assert hypervolume(COST + [3.5], SCORE + [3.0], (5.0, 0.0)) == pytest.approx(11.0)
    assert hypervolume(COST + [3.0], SCORE + [3.5], (5.0, 0.0)) == pytest.approx(11.5)


def test_crowding_and_selection():
    cd = crowding_distance(COST, SCORE, [0, 1, 3])
    assert np.isinf(cd[0]) and np.isinf(cd[2])
    assert cd[1] == pytest.approx(2.0)  # (4-1)/3 + (4-1)/3
    keys = ["a", "b", "c", "d", "e"]
    assert select_by_rank(COST, SCORE, 4, keys).tolist() == [0, 1, 3, 2]
    assert select_by_rank(COST, SCORE, 4, ["a", "b", "z", "d", "e"]).tolist() == [0, 1, 3, 4]
    with pytest.raises(ValueError, match="cannot select 6 points from 5"):
        select_by_rank(COST, SCORE, 6, keys)


def test_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        pareto_front([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([1, float("nan")], [1, 2], (3, 0))
