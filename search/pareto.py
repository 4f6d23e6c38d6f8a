"""The Pareto front of finished trials: a plain function over plain records.

Ray ranks results on one metric only and Optuna's own front ignores what happened outside its study
(failed retries, resumed searches), so the search computes the non-dominated set itself, over the
trials MLflow recorded. Same idea as optuna's ``optuna/study/_multi_objective.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

__all__ = ["Objective", "pareto_front", "dominates"]

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
