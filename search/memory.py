"""What each stage of a spec needs in memory, and whether it fits a stated device: no torch, no transformers.

The dry run and the check print one row per stage with its estimated peak (`pipeline.memory`) at the
spec's batch, sequence length and precision, for the largest model that stage handles among the
candidates within constraints (teacher and student together where a stage holds both). With
``--device-memory SIZE`` each row says whether it fits and, when not, the largest batch that does.
Where a stage runs decides what it may use: the driver adapts and scores the teacher with the whole
device; a trial gets ``search.resources.gpu`` of it (a fraction shares one GPU between trials);
vocabulary trimming runs on the CPU. The search's device is CUDA when ``search.resources.gpu`` > 0,
else the CPU (float32, its RAM).

`memory_problem` is the device check of a run: the first stage, in the order a search runs them, that
cannot fit even at batch 1 stops the command before anything trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline import memory
from pipeline.memory import Estimate, format_bytes
from pipeline.plan import plan_steps
from search.schema import Spec
from search.space import SizedCandidate, plan_template

__all__ = ["StageMemory", "device_of", "format_memory", "memory_problem", "stage_memory", "trial_share"]


@dataclass(frozen=True)
class StageMemory:
    """One stage's peak: ``name`` (as printed), ``field`` (the spec section of its batch and length
    settings, empty when it has none), ``where`` (``driver``, ``trial`` or ``host``), the estimate at the
    spec's settings and ``at``: the estimate at another batch."""

    name: str
    field: str
    where: str
    estimate: Estimate
    at: Callable[[int], Estimate]


def device_of(spec: Spec) -> str:
    return "cuda" if spec.search.resources.gpu > 0 else "cpu"


def trial_share(spec: Spec) -> float:
    """The share of the device one trial may use: ``search.resources.gpu`` (at most 1), or 1 on the CPU."""
    gpu = spec.search.resources.gpu
    return min(gpu, 1.0) if gpu > 0 else 1.0


def stage_memory(spec: Spec, teacher_config: Mapping[str, Any], rows: list[SizedCandidate]) -> list[StageMemory]:
    """Every stage's largest estimated peak over the candidates within constraints, in run order."""
    device = device_of(spec)
    teacher = dict(teacher_config)
    out: list[StageMemory] = []
    if spec.teacher.adapt.enabled:
        cfg = spec.teacher.adapt
        out.append(StageMemory("adapt (teacher)", "teacher.adapt", "driver", memory.adapt(teacher, cfg, device),
                               lambda b: memory.adapt(teacher, cfg, device, batch=b)))
    tasks = list(spec.data.tasks)
    out += _evaluations(spec, [teacher], tasks, "evaluate (teacher)", "driver", device)
    worst: dict[str, StageMemory] = {}
    finals = []
    template = plan_template(spec)
    for row in rows:
        if row.violations:
            continue
        configs = {"teacher": teacher}
        steps = plan_steps(dataclasses.replace(template, candidate=row.candidate), "teacher", teacher)
        for step in steps:
            configs[step.key] = {**teacher, **step.sizes}
        for step in steps:
            stage = _step_memory(spec, step, configs, device)
            if stage.name not in worst or stage.estimate.total > worst[stage.name].estimate.total:
                worst[stage.name] = stage
        finals.append(configs[steps[-1].key] if steps else teacher)
    order = [*spec.stages.order]
    out += sorted(worst.values(), key=lambda stage: order.index(stage.name.split()[0]))
    out += _evaluations(spec, finals, tasks, "evaluate", "trial", device)
    return out


def _step_memory(spec: Spec, step, configs: dict[str, dict], device: str) -> StageMemory:
    model, source = configs[step.key], configs[step.source]
    if step.stage == "distill":
        cfg, teacher = spec.distill, configs[step.teacher]
        return StageMemory("distill", "distill", "trial", memory.distill(model, teacher, cfg, device),
                           lambda b: memory.distill(model, teacher, cfg, device, batch=b))
    if step.stage == "truncate":
        cfg, teacher = spec.truncate.distill, configs[step.teacher]
        return StageMemory("truncate", "truncate.distill", "trial",
                           memory.distill(model, teacher, cfg, device, stage="truncate"),
                           lambda b: memory.distill(model, teacher, cfg, device, batch=b, stage="truncate"))
    if step.stage == "prune":
        cfg = spec.prune
        return StageMemory("prune", "prune", "trial", memory.prune(source, cfg, device, target=model),
                           lambda b: memory.prune(source, cfg, device, batch=b, target=model))
    estimate = memory.rebuild(source, model)
    return StageMemory("trim_vocab (CPU)" if device == "cuda" else "trim_vocab", "",
                       "host" if device == "cuda" else "trial", estimate, lambda b: estimate)


def _evaluations(spec: Spec, configs: list[dict], tasks: list[str], name: str, where: str,
                 device: str) -> list[StageMemory]:
    """The task whose training needs the most, on the largest of ``configs``."""
    best = None
    for task in tasks:
        training = getattr(spec.evaluation, task)
        method = training.method or spec.evaluation.method
        for config in configs:
            estimate = memory.evaluate(config, training, method, device)
            if best is None or estimate.total > best.estimate.total:
                best = StageMemory(name, f"evaluation.{task}", where, estimate,
                                   lambda b, c=config, t=training, m=method: memory.evaluate(c, t, m, device, batch=b))
    return [best] if best is not None else []


def _available(spec: Spec, stage: StageMemory, device_memory: int) -> int | None:
    if stage.where == "host":
        return None
    return int(device_memory * (1.0 if stage.where == "driver" else trial_share(spec)))


def format_memory(spec: Spec, stages: list[StageMemory], device_memory: int | None = None) -> str:
    """The table of the dry run and the check; with ``device_memory`` (bytes) a column says what fits."""
    device = device_of(spec)
    kind = "GPU (bf16 autocast where a stage sets bf16)" if device == "cuda" else "CPU (float32)"
    lines = [f"peak memory per stage, estimated at the spec's settings on the {kind}:"]
    header = ["stage", "settings", "batch x tokens", "precision", "weights", "gradients", "optimiser",
              "activations", "logits+loss", "peak"] + (["fits"] if device_memory else [])
    table = [header]
    for stage in stages:
        e = stage.estimate
        cells = [stage.name, stage.field or "-", f"{e.batch} x {e.seq_len}" if e.batch else "-", e.precision,
                 *(format_bytes(getattr(e, key)) for key in ("weights", "gradients", "optimizer", "activations",
                                                             "logits")), format_bytes(e.total)]
        if device_memory:
            cells.append(_fits(spec, stage, device_memory))
        table.append(cells)
    widths = [max(len(row[k]) for row in table) for k in range(len(header))]
    for row in table:
        lines.append("  " + "  ".join(cell.ljust(w) if k in (0, 1, 3, 10) else cell.rjust(w)
                                      for k, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if device_memory:
        share = trial_share(spec)
        lines.append(f"  device: {format_bytes(device_memory)}; the driver's stages may use all of it, a trial "
                     f"{format_bytes(device_memory * share)}"
                     + (f" (search.resources.gpu: {spec.search.resources.gpu:g})" if device == "cuda" else ""))
    return "\n".join(lines)


def _fits(spec: Spec, stage: StageMemory, device_memory: int) -> str:
    available = _available(spec, stage, device_memory)
    if available is None:
        return "host memory"
    if stage.estimate.total <= available:
        return "yes"
    batch = memory.largest_batch(stage.at, available, stage.estimate.batch) if stage.estimate.batch else 0
    if batch:
        return f"no: {stage.field}.batch_size {batch} fits"
    return "no, not even at batch 1"


def memory_problem(spec: Spec, stages: list[StageMemory], device_memory: int) -> str | None:
    """The one line that stops a run: the first stage, in run order, that cannot fit at batch 1, with its
    estimate and the setting to change; None when every stage fits at batch 1."""
    for stage in stages:
        available = _available(spec, stage, device_memory)
        if available is None:
            continue
        one = stage.at(1)
        if one.total <= available:
            continue
        room = (f"--device-memory {format_bytes(device_memory)}" if stage.where == "driver" else
                f"a trial's {format_bytes(available)} of --device-memory {format_bytes(device_memory)}"
                + (f" (search.resources.gpu: {spec.search.resources.gpu:g})" if device_of(spec) == "cuda" else ""))
        where = stage.field or stage.name.split()[0]
        what = f"at batch_size 1 x {one.seq_len} tokens ({one.precision})" if one.batch else "for its two models"
        if one.fixed > available or not one.batch:
            smaller = "" if stage.where == "driver" else "choose smaller students (space) or "
            change = ("the weights, gradients and optimiser state alone need "
                      f"{format_bytes(one.fixed)}: {smaller}give a device with more memory")
        else:
            change = f"lower {stage.field}.max_length or give a device with more memory"
        name = "" if stage.name == where else f"{stage.name} "
        return f"{where}: {name}needs about {format_bytes(one.total)} {what}, more than {room}; {change}"
    return None
