"""The objective of the search, without Ray: one candidate in, one result dict out.

`TrialContext` holds everything a trial needs besides its candidate (plain data, pickled to Ray
workers); `evaluate_candidate` runs `pipeline.trial.run_trial` on the candidate and flattens its
result into the objectives the sampler ranks.

Constraints: a candidate that breaks ``max_params`` is known from the teacher's config alone, so it
is not trained: it reports its exact ``params``, ``feasible = False`` and penalty values for the
other objectives (the sampler's ``constraints_func`` ranks it last too). ``min_quality`` and
``max_latency_ms`` are only known after training: such trials report their real values with
``feasible = False``. Infeasible trials are logged but never on the front.

Testing: ``TrialContext.trial_fn = "module:function"`` replaces `pipeline.trial.run_trial` with a
function of the same signature (that module's ``screen_student`` and ``score_student`` then stand in
for `pipeline.trial`'s), so the search machinery (failures, resume, cluster) can be tested
with a cheap fake trial. Only the tests' backend sets it (tests/search/backend.py); the service reads
no environment switch for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.config import Candidate, SignalConfig
from pipeline.plan import TrialPlan
from search.schema import MODEL_METRICS
from search.space import label, student_parameters

__all__ = ["PENALTY", "TrialContext", "evaluate_candidate", "screen_candidate"]

logger = logging.getLogger(__name__)

PENALTY = 1e12  # objective value of a candidate that breaks max_params (it is never trained)


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its candidate; every path absolute.

    Attributes:
        plan: the trial plan of the search, with ``candidate=None`` (filled per trial).
        teacher_config: the teacher's ``config.json`` values (sizes, constraints).
        objectives: ``((metric, "min" | "max"), ...)``.
        max_params, min_quality, max_latency_ms: the spec's constraints (None: no limit).
        trial_fn: ``module:function`` replacing `pipeline.trial.run_trial` (tests only), or None.
        rungs: the distillation steps of multi-fidelity's rungs (empty: every trial trains in full).
        rung_signal: ``probe`` or ``mlm``: the signal that scores the rungs below the top one instead of
            an evaluation (None: the plan's ``rung_evaluation``, or the full evaluation).
        signal_settings: how held-out losses and probes are taken (with ``rung_signal``).
    """

    plan: TrialPlan
    teacher_config: Mapping[str, Any]
    objectives: tuple[tuple[str, str], ...]
    max_params: int | None = None
    min_quality: float | None = None
    max_latency_ms: float | None = None
    trial_fn: str | None = None
    rungs: tuple[int, ...] = ()
    rung_signal: str | None = None
    signal_settings: SignalConfig | None = None


def evaluate_candidate(context: TrialContext, candidate: Candidate,
                       progress: Callable[[str], None] | None = None, rung: int | None = None,
                       full_scoring: bool = False) -> dict[str, Any]:
    """Run (or, when it breaks ``max_params``, only size) one candidate, at a rung of the search's
    fidelity (``rung``; None: in full). Below the top rung it is scored with ``context.rung_signal``
    (`pipeline.trial.score_student`; each quality objective then reports the signal, larger is better:
    minus a loss) or the plan's ``rung_evaluation``; ``full_scoring`` scores it with the full evaluation
    instead (the search's final rescoring of its front).

    Returns:
        ``{"metrics": {objectives, params, quality, <task>: score (dev), test_quality, test_<task>,
        disk_mb, latency_ms}, "feasible":
        bool, "result": run_trial's dict}``; every objective is in ``metrics``.

    Raises:
        FloatingPointError: when an objective is NaN or infinite (the trial failed).
        KeyError: when the trial's result lacks an objective.
    """
    params = student_parameters(context.teacher_config, candidate)
    if context.max_params is not None and params > context.max_params:
        logger.info("%s breaks max_params (%d > %d): not trained", label(candidate), params, context.max_params)
        metrics = {m: (float(params) if m == "params" else (-PENALTY if d == "max" else PENALTY))
                   for m, d in context.objectives}
        result = {"params": params, "infeasible": f"params {params} > max_params {context.max_params}"}
        return {"metrics": {**metrics, "params": params}, "feasible": False, "result": result}
    plan = dataclasses.replace(context.plan, candidate=candidate, rung=rung, rungs=context.rungs if rung is not None else ())
    if full_scoring:
        plan = dataclasses.replace(plan, rung_evaluation=None)
    below_top = rung is not None and bool(context.rungs) and rung < max(context.rungs)
    signal = context.rung_signal if below_top and not full_scoring else None
    if signal:
        latency = context.max_latency_ms is not None or any(m == "latency_ms" for m, _ in context.objectives)
        result = _pipeline_fn(context, "score_student")(plan, signal, None, context.signal_settings, progress,
                                                         latency=latency)
    else:
        result = _pipeline_fn(context, "run_trial")(plan, progress)
    if rung is not None and context.rungs:  # what the card and the run say of the training and scoring
        scoring = f"signal {signal}" if signal else "full" if plan.scoring is plan.evaluation else "rung evaluation"
        result = {**result, "fidelity": {"rung": rung, "of": max(context.rungs), "rescored": full_scoring,
                                         "scoring": scoring}}
    metrics = {key: result[key] for key in ("params", "disk_mb", "quality", "test_quality", "latency_ms")
               if key in result}
    metrics.update(result.get("scores") or {})
    metrics.update({f"test_{task}": score for task, score in (result.get("test_scores") or {}).items()})
    if signal:  # the rung ranks by the signal: each quality objective takes it, larger is better
        measured = result["signal"]
        oriented = measured["value"] if measured["better"] == "max" else -measured["value"]
        for metric, _ in context.objectives:
            if metric not in MODEL_METRICS:
                metrics[metric] = measured["parts"].get(metric, oriented)
    for metric, _ in context.objectives:
        if metric not in metrics:
            raise KeyError(f"trial result has no objective {metric!r} (has {sorted(metrics)})")
        value = metrics[metric]
        if value is None or not math.isfinite(float(value)):
            raise FloatingPointError(f"objective {metric} is {value} for {label(candidate)}")
    feasible = not (
        (context.min_quality is not None and not signal and metrics.get("quality", -math.inf) < context.min_quality)
        or (context.max_latency_ms is not None and metrics.get("latency_ms", math.inf) > context.max_latency_ms)
    )
    return {"metrics": metrics, "feasible": feasible, "result": result}


def screen_candidate(context: TrialContext, candidate: Candidate, signal: str, evaluation: Any, cfg: Any,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``candidate``'s student at rung 0 and its cheap ``signal`` (`pipeline.trial.screen_student`), its
    last distillation keyed like the search's rungs."""
    plan = dataclasses.replace(context.plan, candidate=candidate, rungs=context.rungs)
    return _pipeline_fn(context, "screen_student")(plan, signal, evaluation, cfg, progress)


def _pipeline_fn(context: TrialContext, name: str) -> Callable[..., dict]:
    """`pipeline.trial`'s ``name``, or with ``context.trial_fn`` its stand-in: the named function for
    ``run_trial``, that module's function of the same name otherwise."""
    if context.trial_fn:
        module, _, function = context.trial_fn.partition(":")
        return getattr(importlib.import_module(module), function if name == "run_trial" else name)
    from pipeline import trial

    return getattr(trial, name)
