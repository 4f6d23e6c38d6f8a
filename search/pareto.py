"""The Pareto front of finished trials: a plain function over plain records.

Ray ranks results on one metric only and Optuna's own front ignores what happened outside its study
(failed retries, resumed searches), so the search computes the non-dominated set itself, over the
trials MLflow recorded. Same idea as optuna's ``optuna/study/_multi_objective.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

__all__ = [
    "Objective", "crowding_distance", "dominates", "hypervolume", "non_dominated_fronts", "pareto_front", "promoted", "rank",
]

Objective = tuple[str, Literal["min", "max"]]


def _usable(record: Mapping[str, Any], objectives: Sequence[Objective]) -> bool:
    if record.get("failed") or record.get("feasible") is False:
        return False
    metrics = record.get("metrics", {})
    for metric, _ in objectives:
        value = metrics.get(metric)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
    return True


def _key(record: Mapping[str, Any], objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The record's objective values, each turned into "smaller is better"."""
    metrics = record["metrics"]
    return tuple(float(metrics[m]) if d == "min" else -float(metrics[m]) for m, d in objectives)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is no worse than ``b`` in every value and better in one (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(records: Iterable[Mapping[str, Any]], objectives: Sequence[Objective]) -> set[str]:
    """Ids of the non-dominated records.

    Args:
        records: mappings with ``id`` (str), ``metrics`` ({metric: value}) and optionally
            ``failed`` (bool) and ``feasible`` (bool). Failed or infeasible records and records
            missing an objective (or holding NaN/inf for one) are excluded.
        objectives: ``[(metric, "min" | "max"), ...]``, at least one.

    Returns:
        The ids of every record no other usable record dominates. Records with identical
        objective values dominate neither each other, so duplicates of a front point are all on it.

    Raises:
        ValueError: for no objectives or a direction other than ``min``/``max``.
    """
    if not objectives:
        raise ValueError("pareto_front needs at least one objective")
    for metric, direction in objectives:
        if direction not in ("min", "max"):
            raise ValueError(f"objective {metric!r}: direction must be 'min' or 'max', got {direction!r}")
    usable = [(str(r["id"]), _key(r, objectives)) for r in records if _usable(r, objectives)]
    return {
        rid for rid, key in usable if not any(dominates(other, key) for _, other in usable)
    }


def non_dominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of ``points`` (all minimised) sorted into fronts: the first front is non-dominated, the
    second is non-dominated once the first is removed, and so on (NSGA-II's sort)."""
    left = list(range(len(points)))
    fronts = []
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each index of ``front``: the ends of every objective get infinity,
    the others the summed normalised gap between their neighbours (larger: a less crowded point)."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}  # both are ends
    for k in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: points[i][k])
        low, high = points[ordered[0]][k], points[ordered[-1]][k]
        if high == low:  # every point alike in this objective: no end, no gap
            continue
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        for before, here, after in zip(ordered, ordered[1:], ordered[2:]):
            distance[here] += (points[after][k] - points[before][k]) / (high - low)
    return distance


def rank(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of ``points`` (minimised) best first: by front, then by crowding distance (larger first),
    then by index (earlier first), so ties are broken the same way every time."""
    order = []
    for front in non_dominated_fronts(points):
        crowding = crowding_distance(points, front)
        order += sorted(front, key=lambda i: (-crowding[i], i))
    return order


def promoted(results: Mapping[str, Sequence[float]], trial: str, reduction_factor: int) -> bool:
    """Whether ``trial`` continues past a rung in multi-objective successive halving.

    Args:
        results: ``{trial id: objective values (minimised)}`` of every trial that reached this rung,
            ``trial`` included, in the order they arrived; failed trials are simply absent.
        trial: the trial deciding now.
        reduction_factor: only the best ``1 / reduction_factor`` continue.

    Returns:
        True when ``trial`` is among the best ``max(1, len(results) // reduction_factor)`` by `rank`. The
        first trials at a rung are judged against the few that came before (asynchronous halving): with
        fewer trials than the reduction factor only the best one so far continues.
    """
    ids = list(results)
    order = rank([tuple(results[i]) for i in ids])
    keep = max(1, len(ids) // reduction_factor)
    return trial in {ids[i] for i in order[:keep]}


def hypervolume(points: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume (all objectives minimised) that ``points`` dominate up to ``reference``.

    Exact, by slicing along the first objective; fine for the few dozen points of a front. Points
    not better than the reference in every objective add nothing.
    """
    kept = sorted({tuple(p) for p in points if all(x < r for x, r in zip(p, reference))})
    if not kept:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in kept)
    volume = 0.0
    for i, point in enumerate(kept):
        width = (kept[i + 1][0] if i + 1 < len(kept) else reference[0]) - point[0]
        if width > 0:
            volume += width * hypervolume([p[1:] for p in kept[: i + 1]], reference[1:])
    return volume
