"""Everything before the first trial, without Ray: synthetic data, the teacher, its reference scores
and the trial context. Used by the driver and by `run_one` (one candidate, no Ray, no MLflow).

The steps, each explicit:

1. `materialise_synthetic`: ``synthetic:NAME/PART`` URIs of the spec become local paths, building the
   synthetic language (and its teacher, when the spec uses it) once under ``search.synthetic_dir``;
2. `prepare`: every source is opened and summarised (`search.preflight`; a problem stops here), the
   teacher is adapted to the language (cached under ``search.cache_dir``), its
   reference scores computed (cached per task), and the `TrialContext` built.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from pipeline.config import Candidate
from pipeline.plan import TrialPlan
from pipeline.sizes import config_parameters
from search.objective import TrialContext, evaluate_candidate
from search.schema import Spec
from search.space import fidelity_rungs
from search.spec import teacher_config

__all__ = ["materialise_synthetic", "prepare", "run_one", "trial_context"]

logger = logging.getLogger(__name__)


def materialise_synthetic(spec: Spec) -> Spec:
    """``spec`` with every ``synthetic:`` URI replaced by the local path it names, built on first use.

    A spec without synthetic sources comes back unchanged.
    """
    uris = [spec.teacher.model or "", spec.data.corpus.source, spec.data.heldout.source,
            *(task.source for task in spec.data.tasks.values())]
    if not any(uri.startswith("synthetic:") for uri in uris):
        return spec
    from pipeline import synthetic

    def local(uri: str) -> str:
        return synthetic.resolve(uri, spec.search.synthetic_dir) if uri.startswith("synthetic:") else uri

    def source(value):
        return dataclasses.replace(value, source=local(value.source))

    data = spec.data.model_copy(update={
        "corpus": source(spec.data.corpus), "heldout": source(spec.data.heldout),
        "tasks": {name: source(task) for name, task in spec.data.tasks.items()},
    })
    teacher = spec.teacher.model_copy(update={"model": spec.teacher.model and local(spec.teacher.model)})
    return spec.model_copy(update={"teacher": teacher, "data": data})


def prepare(spec: Spec, progress: Callable[[str], None] | None = None) -> tuple[TrialContext, dict[str, Any]]:
    """Materialise synthetic data, adapt the teacher (cached) and compute its reference scores.

    Returns:
        The `TrialContext` for the trials and the teacher's reference: ``params`` and, when the spec
        has tasks, ``quality``, ``disk_mb`` and one score per task; ``latency_ms`` as ``spec.latency`` says.
    """
    from pipeline.trial import build_teacher, prepare_teacher, teacher_reference
    from search.preflight import preflight

    spec = materialise_synthetic(spec)
    config = teacher_config(spec)
    report = preflight(spec)  # every source opens, before anything trains
    logger.info("preflight:\n%s", report.text())
    report.raise_problems()

    cache_dir = spec.search.cache_dir
    logger.info("preparing the teacher %s", spec.teacher.label)
    started = time.time()
    # device None: the pipeline takes CUDA where the driver's node has it (a head node may not).
    if spec.teacher.build is not None:
        teacher = build_teacher(spec.teacher.build, spec.teacher.adapt, spec.data.corpus, spec.data.heldout, cache_dir)
    else:
        teacher = prepare_teacher(spec.teacher.model, spec.teacher.adapt, spec.data.corpus, spec.data.heldout,
                                  cache_dir, trust_remote_code=spec.teacher.trust_remote_code,
                                  allow_pickle=spec.teacher.allow_pickle)
    logger.info("teacher ready in %.0f s: %s; evaluating it on %s", time.time() - started, teacher,
                ", ".join(spec.data.tasks) or "no tasks")
    reference = _flat(teacher_reference(teacher, spec.data.tasks, spec.evaluation, cache_dir,
                                        progress=progress, latency=spec.latency))
    logger.info("teacher latency: %.2f ms on %s", reference["latency_ms"], spec.latency.runtime)
    reference["params"] = config_parameters(config)
    return trial_context(spec, teacher, config), reference


def trial_context(spec: Spec, teacher: str, config: dict[str, Any], trial_fn: str | None = None) -> TrialContext:
    """The `TrialContext` of ``spec``'s trials, given its (prepared) ``teacher`` and the teacher's config."""
    plan = TrialPlan(
        teacher=teacher, candidate=None, order=spec.stages.order, corpus=spec.data.corpus, heldout=spec.data.heldout,
        distill=spec.distill, prune=spec.prune, truncate=spec.truncate, trim_vocab=spec.trim_vocab,
        tasks=dict(spec.data.tasks), evaluation=spec.evaluation, cache_dir=spec.search.cache_dir,
        device="cuda" if spec.search.resources.gpu > 0 else None, latency=spec.latency,
    )
    constraints = spec.constraints
    fidelity = spec.search.fidelity
    rungs: tuple[int, ...] = ()
    if fidelity is not None:
        if fidelity.rung_evaluation is not None:  # signal capped
            plan = dataclasses.replace(plan, rung_evaluation=fidelity.rung_evaluation.apply(spec.evaluation))
        rungs = fidelity_rungs(fidelity)
    signal = fidelity.signal if fidelity is not None and fidelity.signal in ("probe", "mlm") else None
    return TrialContext(
        rungs=rungs, rung_signal=signal, signal_settings=fidelity.settings if signal else None,
        plan=plan, teacher_config=config, objectives=tuple((o.metric, o.direction) for o in spec.objectives),
        max_params=constraints.max_params, min_quality=constraints.min_quality,
        max_latency_ms=constraints.max_latency_ms, trial_fn=trial_fn,
    )


def run_one(spec: Spec, candidate: Candidate, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One candidate of ``spec`` without Ray or MLflow: prepares the teacher (cached), runs the trial."""
    context, _ = prepare(spec, progress)
    return evaluate_candidate(context, candidate, progress)


def _flat(reference: dict[str, Any]) -> dict[str, Any]:
    """Numbers of the teacher reference at the top level: ``quality``, one score per task, ..."""
    flat = {k: v for k, v in reference.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    flat.update({k: v for k, v in (reference.get("scores") or {}).items() if isinstance(v, (int, float))})
    flat.update({f"test_{k}": v for k, v in (reference.get("test_scores") or {}).items() if isinstance(v, (int, float))})
    return flat
