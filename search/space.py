"""The search space of a spec: its choices, its candidate students, their sizes and their labels.

This module is the one mapping between the spec's ``space`` section, `pipeline.config.Candidate` and
the sampler's parameters. The sampler's parameter names are the spec's field names (``layers``,
``ffn``, ``hidden``, ``vocab``, ``init``) and its values the spec's choices (``vocab`` may be
``"full"``), so a study reads like the spec. Sizes come from the teacher's ``config.json`` alone
(`pipeline.sizes`): a whole space is sized in milliseconds without torch.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import Candidate
from pipeline.plan import TrialPlan, plan_steps, rung_steps
from pipeline.families import family_of
from pipeline.sizes import config_parameters
from search.schema import Constraints, Spec

__all__ = [
    "PARAMS",
    "SizedCandidate",
    "candidates",
    "choices",
    "constraint_violations",
    "fidelity_rungs",
    "format_build_summary",
    "format_cost",
    "format_size_table",
    "format_trim",
    "halving_steps",
    "label",
    "plan_template",
    "size_table",
    "student_parameters",
    "to_candidate",
    "to_params",
]

# The sampler's parameters, in Candidate field order: (spec field, Candidate field).
PARAMS = {"layers": "num_hidden_layers", "ffn": "intermediate_size", "hidden": "hidden_size", "vocab": "vocab_size",
          "init": "init"}


def choices(spec: Spec) -> dict[str, tuple[Any, ...]]:
    """``{parameter: choices}`` of the sampler: the spec's lists, ``vocab`` may hold ``"full"``."""
    return {name: tuple(getattr(spec.space, name)) for name in PARAMS}


def to_candidate(params: Mapping[str, Any]) -> Candidate:
    """The `Candidate` of sampled values ``{layers, ffn, hidden, vocab, init}`` (other keys ignored)."""
    vocab = params["vocab"]
    return Candidate(
        num_hidden_layers=int(params["layers"]), intermediate_size=int(params["ffn"]),
        hidden_size=int(params["hidden"]), vocab_size=None if vocab in (None, "full") else int(vocab),
        init=params.get("init", "stride"),
    )


def to_params(candidate: Candidate) -> dict[str, Any]:
    """The sampled values of ``candidate`` (inverse of `to_candidate`)."""
    values = {name: getattr(candidate, field) for name, field in PARAMS.items()}
    return {**values, "vocab": "full" if candidate.vocab_size is None else candidate.vocab_size}


def label(candidate: Candidate) -> str:
    """``L6-F2048-H312-V40000-stride``: layers, FFN, hidden, vocabulary (``Vfull``), init."""
    vocab = "full" if candidate.vocab_size is None else candidate.vocab_size
    return (f"L{candidate.num_hidden_layers}-F{candidate.intermediate_size}-H{candidate.hidden_size}"
            f"-V{vocab}-{candidate.init}")


def candidates(spec: Spec, teacher_config: Mapping[str, Any]) -> list[Candidate]:
    """Every combination of the space's choices, in the order the spec lists them.

    A vocabulary as large as the teacher's is the full vocabulary (``vocab_size=None``).
    """
    full = int(teacher_config["vocab_size"])
    out = []
    for values in itertools.product(*choices(spec).values()):
        candidate = to_candidate(dict(zip(PARAMS, values)))
        if candidate.vocab_size is not None and candidate.vocab_size >= full:
            candidate = Candidate(candidate.num_hidden_layers, candidate.intermediate_size, candidate.hidden_size,
                                  None, candidate.init)
        out.append(candidate)
    return out


def student_parameters(teacher_config: Mapping[str, Any], candidate: Candidate) -> int:
    """Exact ``num_parameters()`` of the candidate's ``...ForMaskedLM`` model."""
    sizes = {
        "num_hidden_layers": candidate.num_hidden_layers,
        "intermediate_size": candidate.intermediate_size,
        "hidden_size": candidate.hidden_size,
    }
    if candidate.vocab_size is not None:
        sizes["vocab_size"] = candidate.vocab_size
    return config_parameters(teacher_config, **sizes)


def constraint_violations(constraints: Constraints, metrics: Mapping[str, Any]) -> list[str]:
    """The constraints that ``metrics`` (keys ``params``, ``quality``, ``latency_ms``) break.

    A metric that is absent breaks nothing here: the dry run knows sizes only.
    """
    broken = []
    params, quality, latency = (metrics.get(key) for key in ("params", "quality", "latency_ms"))
    if constraints.max_params is not None and params is not None and params > constraints.max_params:
        broken.append(f"params > max_params={constraints.max_params:,}")
    if constraints.min_quality is not None and quality is not None and quality < constraints.min_quality:
        broken.append(f"quality < min_quality={constraints.min_quality:g}")
    if constraints.max_latency_ms is not None and latency is not None and latency > constraints.max_latency_ms:
        broken.append(f"latency_ms > max_latency_ms={constraints.max_latency_ms:g}")
    return broken


@dataclass(frozen=True)
class SizedCandidate:
    """A candidate with its exact parameter count, its compression against the teacher (a
    fraction: 0.918 means 91.8% fewer parameters) and the constraints it breaks."""

    candidate: Candidate
    params: int
    compression: float
    violations: tuple[str, ...] = ()


def size_table(spec: Spec, teacher_config: Mapping[str, Any]) -> list[SizedCandidate]:
    """Every candidate of the spec with its size; needs only the teacher's ``config.json``."""
    teacher_params = config_parameters(teacher_config)
    rows = []
    for candidate in candidates(spec, teacher_config):
        params = student_parameters(teacher_config, candidate)
        broken = constraint_violations(spec.constraints, {"params": params})
        rows.append(SizedCandidate(candidate, params, 1 - params / teacher_params, tuple(broken)))
    return rows


def format_size_table(spec: Spec, teacher_config: Mapping[str, Any], rows: list[SizedCandidate]) -> str:
    """The dry run's report: a teacher line, one row per candidate, a summary line."""
    t = teacher_config
    teacher_params = config_parameters(t)
    show_init = len(spec.space.init) > 1
    lines = [
        f"teacher {spec.teacher.label} ({family_of(t).name}): {t['num_hidden_layers']} layers, FFN {t['intermediate_size']}, "
        f"hidden {t['hidden_size']}, vocab {t['vocab_size']:,}, {t['num_attention_heads']} heads: {teacher_params:,} parameters",
    ]
    header = ["#", "layers", "ffn", "hidden", "vocab"] + (["init"] if show_init else []) + ["parameters", "compression", ""]
    table = [header]
    for i, row in enumerate(rows, 1):
        c = row.candidate
        vocab = "full" if c.vocab_size is None else str(c.vocab_size)
        cells = [str(i), str(c.num_hidden_layers), str(c.intermediate_size), str(c.hidden_size), vocab]
        cells += [c.init] if show_init else []
        mark = "x " + ", ".join(row.violations) if row.violations else ""
        cells += [f"{row.params:,}", f"{100 * row.compression:.1f}%", mark]
        table.append(cells)
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    left = {"init", ""}
    for r in table:
        cells = [cell.ljust(w) if header[k] in left else cell.rjust(w) for k, (cell, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append(_summary(spec, rows))
    return "\n".join(lines)


def format_build_summary(spec: Spec, teacher_config: Mapping[str, Any], rows: list[SizedCandidate]) -> str:
    """How many stage builds the candidates within constraints need with reuse, and without.

    Plans every candidate with `pipeline.plan.plan_steps` (no torch): a build is shared when two
    candidates' plans hold a step of the same cache key.
    """
    kept = [row.candidate for row in rows if not row.violations]
    if not kept:
        return "stage builds: no candidate within constraints"
    template = plan_template(spec)
    users: dict[str, Counter] = {}  # stage -> Counter(key -> number of candidates using it)
    total = 0
    for candidate in kept:
        steps = plan_steps(dataclasses.replace(template, candidate=candidate), "teacher", teacher_config)
        total += len(steps)
        for step in steps:
            stage = f"teacher {step.stage}" if step.for_teacher else step.stage
            users.setdefault(stage, Counter())[step.key] += 1
    unique = sum(len(keys) for keys in users.values())
    lines = [f"stage builds for {len(kept)} candidates within constraints: {unique} with reuse, {total} without"]
    if spec.teacher.adapt.enabled:
        lines.append(f"  {'adapt (teacher)':<18} {1:>5} build, shared by every candidate")
    for stage, keys in users.items():
        shared = sum(1 for count in keys.values() if count > 1)
        lines.append(f"  {stage:<18} {len(keys):>5} builds, {shared} shared by several candidates "
                     f"(up to {max(keys.values())})")
    lines.append(f"  {'evaluate':<18} {len(kept):>5} students x {len(spec.data.tasks)} tasks")
    return "\n".join(lines)


def format_cost(spec: Spec, teacher_config: Mapping[str, Any], rows: list[SizedCandidate],
                throughput: float | None = None) -> str:
    """What the search will cost in distillation steps (and hours, given a throughput in tokens/s).

    Counts every candidate within constraints: the distillation builds with reuse and without, and for
    ``search.num_samples`` trials the expected steps of their last distillations, in full and with
    ``search.fidelity`` (`halving_steps`, plus the distillations before the last, which every trial
    needs in full), and what ``search.screen`` trains before the first trial.
    """
    kept = [row.candidate for row in rows if not row.violations]
    steps_of = {"distill": spec.distill.steps, "truncate": spec.truncate.distill.steps}
    if not kept or None in steps_of.values():
        return "cost: the distillation stages run for epochs, not steps: give distill.steps to see the cost"
    template = plan_template(spec)
    unique: dict[str, int] = {}
    before_last: dict[str, int] = {}  # the distillations before each candidate's last one (screening builds them)
    total = last_total = 0
    for candidate in kept:
        steps = [s for s in plan_steps(dataclasses.replace(template, candidate=candidate), "teacher", teacher_config)
                 if s.stage in steps_of]
        for step in steps:
            unique[step.key] = steps_of[step.stage]
        for step in steps[:-1]:
            before_last[step.key] = steps_of[step.stage]
        total += sum(steps_of[s.stage] for s in steps)
        last_total += steps_of[steps[-1].stage] if steps else 0
    cfg = spec.distill
    tokens = cfg.batch_size * cfg.grad_accum * cfg.max_length
    n = min(spec.search.num_samples, len(kept))
    last_mean = last_total / len(kept)
    lines = [f"cost in distillation steps (a step: at most {cfg.batch_size} x {cfg.grad_accum} x {cfg.max_length} = "
             f"{tokens:,} tokens):",
             f"  every candidate: {len(unique)} builds, {sum(unique.values()):,} steps with reuse, {total:,} without",
             f"  {n} sampled trials, last distillations in full: about {n * last_mean:,.0f} steps"]
    fidelity = spec.search.fidelity
    if fidelity is not None:
        rungs = fidelity_rungs(fidelity)
        expected = halving_steps(n, rungs, fidelity.reduction_factor)
        shared = sum(before_last.values())
        lines.append(f"  with search.fidelity (rungs {', '.join(map(str, rungs))}; factor {fidelity.reduction_factor}; "
                     f"ranked below the top by {fidelity.signal}): "
                     f"about {expected:,.0f} steps of last distillations ({expected / (n * fidelity.max_steps):.0%} of "
                     f"{n} x {fidelity.max_steps:,}; the asynchronous rule over random arrival orders), and the "
                     f"distillations before them, which halving never shortens: at most {shared:,} steps; "
                     f"{expected + shared:,.0f} in all")
    screen = spec.search.screen
    if screen is not None:
        lines.append(f"  search.screen: {len(kept)} candidates built to rung 0 and scored by {screen.signal} first; "
                     f"that trains only the distillations before their last one: {len(before_last)} builds, "
                     f"{sum(before_last.values()):,} steps; then the {n} trials run best first")
    if throughput:
        hours = sum(unique.values()) * tokens / throughput / 3600
        lines.append(f"  at {throughput:,.0f} tokens/s: at most {hours:.1f} h for every candidate's builds, one at a time")
    return "\n".join(lines)


def fidelity_rungs(fidelity: Any) -> tuple[int, ...]:
    """The rungs of ``search.fidelity``: 0 first with ``rung_zero``, then `pipeline.plan.rung_steps`."""
    return ((0,) if fidelity.rung_zero else ()) + rung_steps(fidelity.min_steps, fidelity.max_steps,
                                                             fidelity.reduction_factor)


def halving_steps(trials: int, rungs: tuple[int, ...], reduction_factor: int, draws: int = 20, seed: int = 0) -> float:
    """The expected distillation steps of ``trials`` last distillations under asynchronous successive
    halving (`search.pareto.promoted`, the search's own rule): trials arrive one after another with
    random objectives, each is judged at every rung below the top against those that reached it
    before, and trains to the rung where it stops. The mean over ``draws`` seeded arrival orders."""
    import random

    from search.pareto import promoted

    rng = random.Random(seed)
    total = 0
    for _ in range(draws):
        seen: dict[int, dict[str, tuple[float, float]]] = {rung: {} for rung in rungs[:-1]}
        for trial in range(trials):
            point, reached = (rng.random(), rng.random()), rungs[-1]
            for rung in rungs[:-1]:
                seen[rung][str(trial)] = point
                if not promoted(seen[rung], str(trial), reduction_factor):
                    reached = rung
                    break
            total += reached
    return total / draws


def format_trim(spec: Spec, teacher_config: Mapping[str, Any], corpus_lines: int | None = None) -> str:
    """What trimming the vocabulary needs of the corpus: every trimmed size of ``space.vocab`` keeps only
    pieces that occur at least ``trim_vocab.min_count`` times in ``data.corpus``, so a size of ``V`` needs
    at least ``V x min_count`` tokens of text; given the corpus' line count (``corpus_lines``, else
    ``data.corpus.max_lines``), that many tokens a line on average. Empty when nothing is trimmed.
    """
    full = int(teacher_config["vocab_size"])
    sizes = sorted({int(v) for v in spec.space.vocab if v != "full" and int(v) < full}, reverse=True)
    if not sizes:
        return ""
    cfg = spec.trim_vocab
    lines = corpus_lines if corpus_lines is not None else spec.data.corpus.max_lines
    counted = "documents" if cfg.counting == "document" else "times"
    head = (f"trim_vocab keeps the pieces that occur at least {cfg.min_count} {counted} (trim_vocab.min_count) in "
            f"data.corpus, up to the size asked; fewer when fewer reach it (--check counts them)")
    if lines is None:
        return head + "; with --corpus-lines N: what each size needs of N lines"
    needs = "; ".join(f"{size:,} needs at least {size * cfg.min_count:,} {'documents' if cfg.counting == 'document' else 'tokens'}"
                      f", {size * cfg.min_count / lines:,.1f} a line" for size in sizes)
    return f"{head}:\n  of {lines:,} lines: {needs}"


def plan_template(spec: Spec) -> TrialPlan:
    """The trial plan of the spec without a candidate (what `pipeline.plan.plan_steps` needs to plan one)."""
    return TrialPlan(
        teacher=spec.teacher.label, candidate=None, order=spec.stages.order, corpus=spec.data.corpus,
        heldout=spec.data.heldout, distill=spec.distill, prune=spec.prune, truncate=spec.truncate,
        trim_vocab=spec.trim_vocab,
    )


def _summary(spec: Spec, rows: list[SizedCandidate]) -> str:
    ok = [row for row in rows if not row.violations]
    limits = ", ".join(
        f"{name}={value:,}" if isinstance(value, int) else f"{name}={value:g}"
        for name, value in spec.constraints.model_dump().items()
        if value is not None
    )
    text = f"{len(rows)} candidates, {len(ok)} within constraints" + (f" ({limits})" if limits else "")
    if rows:
        small = min(rows, key=lambda row: row.params)
        large = max(rows, key=lambda row: row.params)
        text += (
            f"; smallest {label(small.candidate)} {small.params:,} ({100 * small.compression:.1f}% smaller),"
            f" largest {label(large.candidate)} {large.params:,} ({100 * large.compression:.1f}% smaller)"
        )
    s = spec.search
    text += f"; search: {s.sampler}, {s.num_samples} trials, {s.max_concurrent} at a time"
    return text

