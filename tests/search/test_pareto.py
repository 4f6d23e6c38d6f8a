"""Pareto logic on hand-made records (like optuna's tests/study_tests/test_multi_objective.py)."""

from __future__ import annotations

import math

import pytest

from search.pareto import dominates, pareto_front

QP = [("quality", "max"), ("params", "min")]


def rec(rid, **metrics):
    return {"id": rid, "metrics": metrics}


def test_two_objectives_min_max_mix():
    records = [
        rec("a", quality=0.9, params=100),
        rec("b", quality=0.8, params=50),
        rec("c", quality=0.7, params=80),  # dominated by b
        rec("d", quality=0.95, params=200),
        rec("e", quality=0.5, params=10),
    ]
    assert pareto_front(records, QP) == {"a", "b", "d", "e"}


def test_directions_flip_the_front():
    records = [rec("a", quality=0.9, params=100), rec("b", quality=0.8, params=50)]
    assert pareto_front(records, [("quality", "min"), ("params", "min")]) == {"b"}
    assert pareto_front(records, [("quality", "max"), ("params", "max")]) == {"a"}


def test_ties_in_one_objective():
    records = [
        rec("a", quality=0.9, params=100),
        rec("b", quality=0.9, params=80),  # same quality, smaller: dominates a
        rec("c", quality=0.8, params=80),  # same size, worse: dominated by b
    ]
    assert pareto_front(records, QP) == {"b"}


def test_duplicates_of_a_front_point_are_all_on_the_front():
    records = [
        rec("a", quality=0.9, params=100),
        rec("a2", quality=0.9, params=100),
        rec("b", quality=0.5, params=10),
        rec("c", quality=0.4, params=100),
        rec("c2", quality=0.4, params=100),
    ]
    assert pareto_front(records, QP) == {"a", "a2", "b"}


def test_three_objectives():
    objectives = [("quality", "max"), ("params", "min"), ("latency_ms", "min")]
    records = [
        rec("a", quality=0.9, params=100, latency_ms=10),
        rec("b", quality=0.8, params=50, latency_ms=12),
        rec("c", quality=0.8, params=120, latency_ms=5),  # only best latency: on the front
        rec("d", quality=0.7, params=120, latency_ms=11),  # dominated by a
        rec("e", quality=0.8, params=50, latency_ms=13),  # dominated by b
    ]
    assert pareto_front(records, objectives) == {"a", "b", "c"}
    # With two of the three objectives c drops out and e becomes a duplicate of b.
    assert pareto_front(records, QP) == {"a", "b", "e"}


def test_failed_infeasible_and_incomplete_records_are_excluded():
    records = [
        rec("a", quality=0.5, params=100),
        {"id": "failed", "metrics": {"quality": 0.99, "params": 1}, "failed": True},
        {"id": "infeasible", "metrics": {"quality": 0.99, "params": 1}, "feasible": False},
        rec("missing", params=1),
        rec("nan", quality=math.nan, params=1),
        rec("inf", quality=0.99, params=math.inf),
    ]
    assert pareto_front(records, QP) == {"a"}


def test_single_objective_and_empty():
    assert pareto_front([rec("a", quality=1), rec("b", quality=1), rec("c", quality=0)],
                        [("quality", "max")]) == {"a", "b"}
    assert pareto_front([], QP) == set()


def test_bad_objectives():
    with pytest.raises(ValueError, match="at least one"):
        pareto_front([], [])
    with pytest.raises(ValueError, match="direction"):
        pareto_front([], [("quality", "maximize")])


def test_dominates():
    assert dominates((1, 1), (1, 2))
    assert not dominates((1, 2), (1, 2))
    assert not dominates((0, 3), (1, 2))


# ---------------------------------------------------------------- multi-objective successive halving
from search.pareto import crowding_distance, hypervolume, non_dominated_fronts, promoted, rank  # noqa: E402


def test_fronts_and_crowding():
    points = [(1, 3), (2, 2), (3, 1), (3, 3), (4, 4)]
    assert non_dominated_fronts(points) == [[0, 1, 2], [3], [4]]
    crowd = crowding_distance(points, [0, 1, 2])
    assert crowd[0] == crowd[2] == float("inf") and crowd[1] == 2.0
    assert rank(points) == [0, 2, 1, 3, 4]  # the middle of the first front is the most crowded


def test_promotion_keeps_the_top_share_by_front_then_crowding():
    rung = {"a": (1, 5), "b": (2, 4), "c": (3, 3), "d": (4, 2), "e": (5, 1), "f": (5, 5)}
    # 6 trials, reduction factor 3: the best 2 continue; all but f are non-dominated, the two ends win
    assert {t for t in rung if promoted(rung, t, 3)} == {"a", "e"}


def test_ties_are_broken_by_arrival():
    rung = {"a": (1, 1), "b": (1, 1), "c": (1, 1), "d": (2, 2)}
    assert [t for t in rung if promoted(rung, t, 2)] == ["a", "b"]


def test_promotion_with_three_objectives():
    rung = {"a": (0, 0, 9), "b": (9, 0, 0), "c": (0, 9, 0), "d": (5, 5, 5), "e": (6, 6, 6), "f": (7, 7, 7)}
    assert {t for t in rung if promoted(rung, t, 2)} == {"a", "b", "c"}  # the first front, 3 of 6


def test_fewer_trials_than_the_reduction_factor():
    assert promoted({"a": (1, 1)}, "a", 3)  # the first trial at a rung goes on
    assert promoted({"a": (2, 2), "b": (1, 1)}, "b", 3) and not promoted({"a": (1, 1), "b": (2, 2)}, "b", 3)


def test_a_failed_trial_is_simply_absent():
    # "x" failed before this rung: it is not in the results and takes no place among the kept
    assert promoted({"a": (3, 3), "b": (1, 1), "c": (2, 2)}, "c", 2) is False
    assert promoted({"a": (3, 3), "c": (2, 2)}, "c", 2) is True


def test_hypervolume():
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == 6.0
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3)], (4, 4)) == 6.0  # a dominated point adds nothing
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == 5.0
    assert hypervolume([(5, 5)], (4, 4)) == 0.0
