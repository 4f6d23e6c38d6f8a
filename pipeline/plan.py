"""One trial as a plan: which stages run, in which order, on what, under which cache keys.

Everything here is torch-free, so a dry run can plan a whole search space in milliseconds. Which
stages run and every cache key follow from the teacher's key and config, the candidate, the order and
the stage settings alone: a stage whose size the candidate leaves unchanged is skipped, and every
output is keyed by its input's key, the stage name and the settings it uses (`pipeline.cache.stage_key`),
so trials that share a prefix of stages share its outputs. When the vocabulary is trimmed before a
distillation, the distillation's teacher needs the same ids: the plan then holds a step that trims
that teacher alike (``for_teacher``), built once and cached like any other.

Multi-fidelity: with ``rung`` set, a student's last distillation (the one no other distillation
follows; on the paper's path the second distillation after truncation, one per layers x FFN x hidden)
trains ``rung`` steps of a ``max(rungs)``-step schedule, and a longer rung continues from a shorter
one's saved state (`pipeline.training.Fidelity`). Earlier distillations are shared by many students
through the cache and always train their full steps, so what the last one starts from never changes.

`pipeline.trial.run_trial` executes a plan; `plan_steps` is what it and the dry run share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cache import canonical_json, stage_key
from pipeline.config import (
    STAGES, Candidate, CorpusSource, DistillConfig, EvalConfig, LatencyConfig, PruneConfig, TaskSource,
    TrimVocabConfig, TruncateConfig,
)
from pipeline.errors import UsageError

__all__ = [
    "SIZE_KEYS", "Step", "TrialPlan", "input_key", "plan_from_dict", "plan_steps", "rung_steps", "size_problems",
]

# The config keys a candidate sets, in pipeline order, with the stage that changes each.
SIZE_KEYS = {
    "num_hidden_layers": "distill",
    "intermediate_size": "prune",
    "hidden_size": "truncate",
    "vocab_size": "trim_vocab",
}


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs; plain data, so it travels to a Ray worker or a JSON file.

    ``candidate`` may be None in a template that a search fills per trial (`dataclasses.replace`);
    a plan that runs needs one. ``latency``: how the student's latency is measured (every trial).
    Multi-fidelity: ``rung`` is where this trial's last distillation stops, of ``rungs``;
    ``rung_evaluation`` (None: ``evaluation``) scores the rungs below the top one.
    """

    teacher: str
    candidate: Candidate | None
    order: tuple[str, ...]
    corpus: CorpusSource
    heldout: CorpusSource
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    truncate: TruncateConfig = field(default_factory=TruncateConfig)
    trim_vocab: TrimVocabConfig = field(default_factory=TrimVocabConfig)
    tasks: dict[str, TaskSource] = field(default_factory=dict)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    cache_dir: str = "cache"
    device: str | None = None
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    rung: int | None = None
    rungs: tuple[int, ...] = ()
    rung_evaluation: EvalConfig | None = None

    @property
    def scoring(self) -> EvalConfig:
        """The evaluation this plan scores with: ``rung_evaluation`` below the top rung, else ``evaluation``."""
        below_top = self.rung is not None and bool(self.rungs) and self.rung < max(self.rungs)
        return self.rung_evaluation if below_top and self.rung_evaluation is not None else self.evaluation


@dataclass(frozen=True)
class Step:
    """One stage build: its output key, the keys of its inputs, and the sizes it produces.

    Attributes:
        stage: ``distill``, ``prune``, ``truncate`` or ``trim_vocab``.
        key: cache key of the output (``cache_dir/key``).
        source: key of the model the stage edits (the teacher's key for the first step).
        teacher: key of the distillation teacher (``distill`` and ``truncate``), else None.
        sizes: the output's ``num_hidden_layers``, ``intermediate_size``, ``hidden_size`` and
            ``vocab_size`` (a trimmed vocabulary may end up smaller: fewer pieces reach ``min_count``).
        for_teacher: True for a copy of a distillation teacher trimmed like the student.
        rung: for the multi-fidelity distillation, the step it stops at (None: its full steps).
        resume: keys of the same build at lower rungs, the highest first (it continues from one).
    """

    stage: str
    key: str
    source: str
    teacher: str | None
    sizes: Mapping[str, int]
    for_teacher: bool = False
    rung: int | None = None
    resume: tuple[str, ...] = ()


def rung_steps(min_steps: int, max_steps: int, reduction_factor: int) -> tuple[int, ...]:
    """The rungs of successive halving: ``min_steps`` times powers of ``reduction_factor`` while a rung
    is at most ``max_steps / reduction_factor``, then ``max_steps``. No rung falls within one reduction
    factor of the top: a rung at 900 of 1,000 would buy a whole promotion round for 10% more training.

    >>> rung_steps(100, 1000, 3)
    (100, 300, 1000)
    >>> rung_steps(25, 200, 3)
    (25, 200)
    """
    rungs, step = [], min_steps
    while step * reduction_factor <= max_steps:
        rungs.append(step)
        step *= reduction_factor
    return (*rungs, max_steps)


def input_key(model: str) -> str:
    """The cache key of a model given by the user: its path and the size/time of its files, or its hub id."""
    path = Path(model)
    if not path.is_dir():
        return f"hub:{model}"
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    digest = hashlib.sha256(canonical_json([str(path.resolve()), files]).encode()).hexdigest()[:20]
    return f"dir:{path.name}-{digest}"


def size_problems(teacher_config: Mapping[str, Any], **sizes: int | None) -> list[tuple[str, str]]:
    """``(config key, message)`` for every size a student of this teacher cannot have.

    A student has at most the teacher's layers, FFN width, hidden size and vocabulary, at least one
    of each, and a hidden size the teacher's attention heads divide (each keeps ``hidden / heads``
    dimensions). ``None`` (the full vocabulary) is always possible.

    Args:
        teacher_config: the teacher's ``config.json`` values.
        sizes: any of the `SIZE_KEYS`, e.g. ``hidden_size=312``.
    """
    heads = int(teacher_config["num_attention_heads"])
    problems = []
    for key, value in sizes.items():
        if key not in SIZE_KEYS:
            raise TypeError(f"unknown size {key!r}; expected one of {', '.join(SIZE_KEYS)}")
        if value is None:
            continue
        limit = int(teacher_config[key])
        if value > limit:
            problems.append((key, f"{value} is larger than the teacher's {key}={limit}"))
        elif value < 1:
            problems.append((key, f"{value} must be at least 1"))
        elif key == "hidden_size" and value % heads:
            problems.append((key, f"{value} is not divisible by num_attention_heads={heads}"))
    return problems


def plan_steps(plan: TrialPlan, teacher_key: str, teacher_config: Mapping[str, Any]) -> list[Step]:
    """The stage builds of ``plan.candidate``, inputs before the steps that read them.

    Identity stages (the candidate keeps that size) are left out; so is a trimmed teacher copy
    that no later distillation reads.

    Raises:
        UsageError: for an order that is not a permutation of the four stages, or a candidate the
            teacher cannot yield (see `size_problems`).
    """
    candidate = plan.candidate
    if candidate is None:
        raise UsageError("the plan has no candidate")
    if sorted(plan.order) != sorted(STAGES):
        raise UsageError(f"order {list(plan.order)} must be a permutation of {list(STAGES)}")
    wanted = {key: getattr(candidate, key) for key in SIZE_KEYS}
    problems = size_problems(teacher_config, **wanted)
    if problems:
        key, message = problems[0]
        raise UsageError(f"candidate {key}: {message}")
    sizes = {key: int(teacher_config[key]) for key in SIZE_KEYS}
    current, kd_teacher = teacher_key, teacher_key
    pending: dict[str, Step] = {}  # trimmed teacher copies, added when a distillation reads one
    steps: list[Step] = []

    def needs(key: str) -> None:
        if key in pending:
            steps.append(pending.pop(key))

    for stage in plan.order:
        size_key = next(key for key, owner in SIZE_KEYS.items() if owner == stage)
        value = wanted[size_key]
        if stage == "trim_vocab":
            identity = value is None or value >= sizes[size_key]
        else:
            identity = value == sizes[size_key]
        if identity:
            continue
        sizes = {**sizes, size_key: value}
        teacher = None
        if stage == "distill":
            teacher = kd_teacher
            settings = {"layers": value, "init": candidate.init, "distill": plan.distill, "teacher": teacher,
                        "corpus": plan.corpus, "heldout": plan.heldout}
        elif stage == "prune":
            settings = {"ffn": value, "prune": plan.prune, "heldout": plan.heldout}
        elif stage == "truncate":
            # The second distillation learns from the pruned model (paper) or the original teacher.
            teacher = current if plan.truncate.teacher == "pruned" else kd_teacher
            settings = {"hidden": value, "method": plan.truncate.method, "teacher": teacher,
                        "distill": plan.truncate.distill, "corpus": plan.corpus, "heldout": plan.heldout}
        else:
            settings = {"vocab_size": value, "trim_vocab": plan.trim_vocab, "corpus": plan.corpus}
            # The same counts on the same tokenizer keep the same pieces: trim the teacher alike.
            trimmed = stage_key(kd_teacher, stage, settings)
            if trimmed != stage_key(current, stage, settings):
                teacher_sizes = {**{k: int(teacher_config[k]) for k in SIZE_KEYS}, size_key: value}
                pending[trimmed] = Step(stage, trimmed, kd_teacher, None, teacher_sizes, for_teacher=True)
            kd_teacher = trimmed
        if teacher is not None:
            needs(teacher)
        key = stage_key(current, stage, settings)
        steps.append(Step(stage, key, current, teacher, sizes))
        current = key
    return _with_rung(plan, steps) if plan.rung is not None else steps


def _with_rung(plan: TrialPlan, steps: list[Step]) -> list[Step]:
    """The steps with the last distillation stopped at ``plan.rung`` and everything after it re-keyed."""
    last = max((i for i, s in enumerate(steps) if s.stage in ("distill", "truncate") and not s.for_teacher),
               default=None)
    if last is None:
        return steps
    if plan.rung not in plan.rungs:
        raise UsageError(f"rung {plan.rung} is not one of the search's rungs {list(plan.rungs)}")
    rekeyed = {}

    def key_at(step: Step, rung: int) -> str:
        return stage_key(step.key, f"{step.stage}@rung", {"rung": rung, "of": max(plan.rungs)})

    out = list(steps[:last])
    target = steps[last]
    lower = tuple(key_at(target, r) for r in sorted(plan.rungs, reverse=True) if r < plan.rung)
    rekeyed[target.key] = key_at(target, plan.rung)
    out.append(dataclasses.replace(target, key=rekeyed[target.key], rung=plan.rung, resume=lower))
    for step in steps[last + 1:]:
        source = rekeyed.get(step.source, step.source)
        key = stage_key(source, step.stage, {"after": step.key})
        rekeyed[step.key] = key
        out.append(dataclasses.replace(step, key=key, source=source, teacher=rekeyed.get(step.teacher, step.teacher)))
    return out


def plan_from_dict(data: dict) -> TrialPlan:
    """A `TrialPlan` from plain JSON data; corpus sources may be given as plain strings.

    Raises:
        UsageError: naming the field of an unknown key or a wrong value.
    """
    return _build(TrialPlan, data, "plan")


def _build(cls, value, where: str):
    if isinstance(value, cls):
        return value
    if cls in (CorpusSource, TaskSource) and isinstance(value, str):
        value = {"source": value}
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected an object for {cls.__name__}, got {value!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(names))})")
    kwargs = {name: _convert(hints[name], raw, f"{where}.{name}") for name, raw in value.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise UsageError(f"{where}: {error}") from None


def _convert(hint, raw, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        if raw is None:
            return None
        if len(inner) == 1:
            return _convert(inner[0], raw, where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, where)
    if origin is tuple:
        return tuple(raw)
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return {key: _build(args[1], item, f"{where}.{key}") for key, item in raw.items()}
    return raw
