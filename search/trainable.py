"""The Ray Tune trainable: sampled values -> Candidate + TrialPlan -> `pipeline.trial.run_trial` -> one
report with every objective. ``run_one`` is the same call with fixed values and no Ray.

Constraint handling (the simplest correct thing): ``constraints.max_params`` is known from the
teacher's config alone (`pipeline.sizes`), so a candidate that breaks it is not trained. It reports
its exact ``params``, ``feasible = 0`` and penalty values for the other objectives, and the sampler
also gets a ``constraints_func`` (NSGA-II and TPE both take one) so Optuna ranks it below every
feasible trial. ``min_quality`` and ``max_latency_ms`` are only known after training: such trials
report their real values with ``feasible = 0``. Infeasible trials are logged but never on the front.

Testing hook: the environment variable ``LRL_TRIAL_FN=module:function`` (read by the driver when it
builds the context) replaces `pipeline.trial.run_trial` with a function of the same signature, so
the search machinery (failures, resume, cluster) can be tested with a cheap fake trial.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import json
import logging
import math
import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Candidate, CorpusSource, TaskSource
from search.space import student_parameters

try:
    from optuna.samplers import BaseSampler as _BaseSampler
except ImportError:  # run_one needs no Optuna
    _BaseSampler = object

__all__ = [
    "TRIAL_FN_ENV", "DistinctSampler", "TrialContext", "build_context", "candidate_from_config", "candidate_label",
    "constraints_func", "evaluate_candidate", "objectives_of", "run_one", "search_space", "trainable",
]

logger = logging.getLogger(__name__)

TRIAL_FN_ENV = "LRL_TRIAL_FN"
PENALTY = 1e12  # objective value of a candidate that breaks max_params (it is never trained)
REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its sampled values; plain data, pickled to the workers.

    ``plan`` holds the `pipeline.trial.TrialPlan` fields except ``candidate``, every path absolute.
    """

    plan: Mapping[str, Any]
    teacher_config: Mapping[str, Any]
    objectives: tuple[tuple[str, str], ...]
    max_params: int | None = None
    min_quality: float | None = None
    max_latency_ms: float | None = None
    trial_fn: str | None = None


# ---------------------------------------------------------------------------- spec -> search space
def objectives_of(spec: Any) -> list[tuple[str, str]]:
    """``[(metric, "min"|"max"), ...]`` from ``spec.objectives`` (``maximize``/``max`` both accepted)."""
    out = []
    for objective in spec.objectives:
        direction = str(objective.direction).lower()
        out.append((objective.metric, "max" if direction.startswith("max") else "min"))
    return out


def search_space(space: Any) -> dict[str, Any]:
    """Optuna distributions of ``spec.space``: categorical ``layers``, ``ffn``, ``hidden``, ``vocab``
    (``"full"`` or an int) and ``init``."""
    from optuna.distributions import CategoricalDistribution

    out = {}
    for name in ("layers", "ffn", "hidden", "vocab", "init"):
        choices = [c if c is None or isinstance(c, (int, str)) else str(c) for c in getattr(space, name)]
        out[name] = CategoricalDistribution(["full" if c is None else c for c in choices])
    return out


def candidate_from_config(config: Mapping[str, Any]) -> Candidate:
    """The Candidate of a sampled config ``{layers, ffn, hidden, vocab, init}``."""
    vocab = config["vocab"]
    return Candidate(
        num_hidden_layers=int(config["layers"]), intermediate_size=int(config["ffn"]),
        hidden_size=int(config["hidden"]), vocab_size=None if vocab in (None, "full") else int(vocab),
        init=config.get("init", "stride"),
    )


def candidate_label(candidate: Candidate) -> str:
    vocab = "full" if candidate.vocab_size is None else candidate.vocab_size
    return (f"L{candidate.num_hidden_layers}-F{candidate.intermediate_size}-H{candidate.hidden_size}"
            f"-V{vocab}-{candidate.init}")


def _constraint_values(teacher_config: Mapping[str, Any], max_params: int, trial: Any) -> list[float]:
    try:
        params = student_parameters(teacher_config, candidate_from_config(trial.params))
    except (KeyError, ValueError, TypeError):
        return [0.0]
    return [float(params - max_params)]


def constraints_func(context: TrialContext) -> Callable[[Any], Sequence[float]] | None:
    """Optuna ``constraints_func`` (value <= 0 is feasible) for ``max_params``; picklable."""
    if context.max_params is None:
        return None
    return functools.partial(_constraint_values, dict(context.teacher_config), context.max_params)


class DistinctSampler(_BaseSampler):
    """An Optuna sampler wrapper that does not propose a candidate the study already has.

    The space is a small product of categoricals, and NSGA-II's offspring (or independent random
    draws) repeat candidates often: 8 trials of the demo drew only 5 distinct students. Every
    proposal is checked against the study's trials; a repeat is re-drawn from the inner sampler a
    few times, then replaced by a random unseen candidate. Once every candidate has been tried,
    repeats are allowed (a repeat is cheap: its stages and evaluation are cached). Module-level so
    that Tune can pickle the searcher's state.

    Args:
        inner: the sampler that proposes (NSGA-II or TPE, seeded).
        space: ``{name: CategoricalDistribution}`` of the search.
        seed: seed of the fallback draw.
    """

    def __init__(self, inner: Any, space: Mapping[str, Any], seed: int | None = None) -> None:
        self.inner, self.space = inner, dict(space)
        self.rng = random.Random(seed)

    def infer_relative_search_space(self, study, trial):
        return self.space

    def sample_relative(self, study, trial, search_space):
        seen = {_key(t.params, self.space) for t in study.get_trials(deepcopy=False)
                if t.number != trial.number and t.params}
        inner_space = self.inner.infer_relative_search_space(study, trial)
        proposal: dict[str, Any] = {}
        for _ in range(5):
            proposal = dict(self.inner.sample_relative(study, trial, inner_space)) if inner_space else {}
            for name, dist in self.space.items():
                if name not in proposal:
                    proposal[name] = self.inner.sample_independent(study, trial, name, dist)
            if _key(proposal, self.space) not in seen:
                return proposal
        names = list(self.space)
        unseen = [combo for combo in itertools.product(*(self.space[n].choices for n in names))
                  if tuple(combo) not in seen]
        return dict(zip(names, self.rng.choice(unseen))) if unseen else proposal

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()


def _key(params: Mapping[str, Any], space: Mapping[str, Any]) -> tuple:
    return tuple(params.get(name) for name in space)


# ---------------------------------------------------------------------------- spec -> context
def _resolve(source: str, synthetic_root: Path) -> str:
    if source.startswith("synthetic:"):
        from pipeline.synthetic import resolve

        return str(Path(resolve(source, str(synthetic_root))).resolve())
    if source.startswith("hf:") or "://" in source:
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() or not path.is_absolute() else source


def resolve_sources(spec: Any, cache_dir: Path) -> tuple[CorpusSource, CorpusSource, dict[str, TaskSource]]:
    """Corpus, held-out and task sources with ``synthetic:`` URIs and relative paths made absolute
    (trials run in another working directory, possibly on another node)."""
    root = synthetic_root()
    corpus = dataclasses.replace(spec.data.corpus, source=_resolve(spec.data.corpus.source, root))
    heldout = dataclasses.replace(spec.data.heldout, source=_resolve(spec.data.heldout.source, root))
    tasks = {name: dataclasses.replace(src, source=_resolve(src.source, root))
             for name, src in (spec.data.tasks or {}).items()}
    return corpus, heldout, tasks


def resolve_teacher(spec: Any, cache_dir: Path) -> str:
    """The teacher as a local directory (``synthetic:`` built on first use) or a hub id."""
    model = spec.teacher.model
    if model.startswith("synthetic:"):
        return _resolve(model, synthetic_root())
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def cache_dir_of(spec: Any) -> Path:
    """The stage cache shared by trials (``search.cache_dir``)."""
    configured = getattr(spec.search, "cache_dir", None)
    return Path(configured).expanduser().resolve() if configured else (REPO / ".cache" / "stages").resolve()


def synthetic_root() -> Path:
    """Where ``synthetic:`` languages and teachers are built once per checkout (``$LRL_SYNTHETIC_ROOT``
    or ``<repo>/.cache/synthetic``), shared by every search whatever its cache_dir."""
    return Path(os.environ.get("LRL_SYNTHETIC_ROOT", REPO / ".cache" / "synthetic")).resolve()


def stage_order(spec: Any) -> tuple[str, ...]:
    stages = spec.stages
    return tuple(getattr(stages, "order", stages))


def build_context(spec: Any, teacher_dir: str, teacher_config: Mapping[str, Any]) -> TrialContext:
    """The per-search TrialContext: the prepared teacher, resolved sources, stage settings."""
    cache_dir = cache_dir_of(spec)
    corpus, heldout, tasks = resolve_sources(spec, cache_dir)
    objectives = tuple(objectives_of(spec))
    constraints = spec.constraints
    max_latency = getattr(constraints, "max_latency_ms", None)
    gpu = float(getattr(spec.search.resources, "gpu", 0) or 0)
    plan = dict(
        teacher=teacher_dir, order=stage_order(spec), corpus=corpus, heldout=heldout,
        distill=spec.distill, prune=spec.prune, truncate=spec.truncate, trim_vocab=spec.trim_vocab,
        tasks=tasks, evaluation=spec.evaluation, cache_dir=str(cache_dir),
        device="cuda" if gpu > 0 else None,
        measure_latency=any(m == "latency_ms" for m, _ in objectives) or max_latency is not None,
    )
    return TrialContext(
        plan=plan, teacher_config=dict(teacher_config), objectives=objectives,
        max_params=getattr(constraints, "max_params", None),
        min_quality=getattr(constraints, "min_quality", None), max_latency_ms=max_latency,
        trial_fn=os.environ.get(TRIAL_FN_ENV) or None,
    )


# ---------------------------------------------------------------------------- one trial
def _trial_fn(context: TrialContext) -> Callable[..., dict]:
    if context.trial_fn:
        module, _, name = context.trial_fn.partition(":")
        return getattr(importlib.import_module(module), name)
    from pipeline.trial import run_trial

    return run_trial


def _plan(context: TrialContext, candidate: Candidate) -> Any:
    from pipeline.trial import TrialPlan

    return TrialPlan(candidate=candidate, **context.plan)


def evaluate_candidate(context: TrialContext, candidate: Candidate,
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or, when it breaks ``max_params``, size only) one candidate and return the flat report.

    Returns:
        ``{objective metrics..., params, quality, <task>: score, disk_mb, latency_ms, feasible,
        candidate: {...}, result_json: <run_trial's dict as JSON>}``.

    Raises:
        FloatingPointError: when an objective is NaN or infinite (the trial failed).
        KeyError: when the trial's result lacks an objective.
    """
    params = student_parameters(context.teacher_config, candidate)
    cand = dataclasses.asdict(candidate)
    if context.max_params is not None and params > context.max_params:
        logger.info("%s breaks max_params (%d > %d): not trained", candidate_label(candidate),
                    params, context.max_params)
        report = {m: (float(params) if m == "params" else (-PENALTY if d == "max" else PENALTY))
                  for m, d in context.objectives}
        result = {"params": params, "infeasible": f"params {params} > max_params {context.max_params}"}
        return {**report, "params": params, "feasible": 0, "candidate": cand,
                "result_json": json.dumps(result)}
    result = _trial_fn(context)(_plan(context, candidate), progress)
    flat: dict[str, Any] = {}
    for key in ("params", "disk_mb", "quality", "latency_ms"):
        if key in result:
            flat[key] = result[key]
    flat.update(result.get("scores") or {})
    for metric, _ in context.objectives:
        if metric not in flat:
            raise KeyError(f"trial result has no objective {metric!r} (has {sorted(flat)})")
        value = flat[metric]
        if value is None or not math.isfinite(float(value)):
            raise FloatingPointError(f"objective {metric} is {value} for {candidate_label(candidate)}")
    feasible = not (
        (context.min_quality is not None and flat.get("quality", -math.inf) < context.min_quality)
        or (context.max_latency_ms is not None
            and flat.get("latency_ms", math.inf) > context.max_latency_ms)
    )
    return {**flat, "feasible": int(feasible), "candidate": cand, "result_json": json.dumps(result, default=str)}


def trainable(config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable: one candidate, one ``ray.tune.report`` with every objective.

    An exception (NaN loss -> FloatingPointError included) fails the trial; Tune retries it up to
    ``FailureConfig(max_failures)`` times.
    """
    from ray import tune

    candidate = candidate_from_config(config)
    label = candidate_label(candidate)

    def progress(message: str) -> None:
        print(f"[{label}] {message}", file=sys.stderr, flush=True)

    progress("start")
    report = evaluate_candidate(context, candidate, progress)
    report["candidate"] = json.dumps(report["candidate"])
    tune.report(report)


def run_one(spec: Any, candidate: Candidate, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One candidate of ``spec`` without Ray or MLflow: prepares the teacher (cached), runs the trial."""
    from search.driver import prepare

    context, _ = prepare(spec)
    return evaluate_candidate(context, candidate, progress)
