"""One candidate of the search, start to finish: the stages in the plan's order, then evaluation.

The recipe: every stage output lives in the cache under a key that chains the previous stage's key
with this stage's config and the candidate values it uses, so trials that share a prefix of stages
(the same distilled 6-layer student, say) build it once. A stage that is an identity for the
candidate is skipped. When the vocabulary is trimmed before a distillation, the distillation's
teacher is trimmed the same way (cached once), so teacher and student see the same token ids.

``python -m pipeline trial PLAN.json`` runs one plan without Ray; the search calls `run_trial`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import statistics
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import modeling
from pipeline.cache import cached, canonical_json, stage_key
from pipeline.config import (
    STAGES, AdaptConfig, Candidate, CorpusSource, DistillConfig, EvalConfig, PruneConfig, TaskSource,
    TrimVocabConfig, TruncateConfig,
)
from pipeline.errors import UsageError
from pipeline.sizes import config_parameters

__all__ = ["TrialPlan", "input_key", "plan_from_dict", "prepare_teacher", "run_trial", "teacher_reference"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs; plain data, so it travels to a Ray worker or a JSON file."""

    teacher: str
    candidate: Candidate
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
    measure_latency: bool = False


def input_key(model: str) -> str:
    """The cache key of a model given by the user: its path and the size/time of its files, or its hub id."""
    path = Path(model)
    if not path.is_dir():
        return f"hub:{model}"
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    digest = hashlib.sha256(canonical_json([str(path.resolve()), files]).encode()).hexdigest()[:20]
    return f"dir:{path.name}-{digest}"


class _Texts:
    """The plan's corpus and held-out text, read on first use (a fully cached trial reads nothing)."""

    def __init__(self, corpus: CorpusSource, heldout: CorpusSource):
        self._sources, self._lines = {"corpus": corpus, "heldout": heldout}, {}

    def __getattr__(self, name: str) -> list[str]:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._lines:
            from pipeline.corpus import read_corpus

            self._lines[name] = read_corpus(self._sources[name])
        return self._lines[name]


def prepare_teacher(model: str, adapt: AdaptConfig, corpus: CorpusSource, heldout: CorpusSource,
                    cache_dir: str, device: str | None = None) -> str:
    """The (language-adapted) teacher's directory: adapted once per key, or ``model`` when adaptation is off."""
    if not adapt.enabled:
        return str(model)
    key = stage_key(input_key(model), "adapt", {"adapt": adapt, "corpus": corpus, "heldout": heldout})

    def build(out: Path) -> None:
        from pipeline.adapt import adapt as adapt_stage

        texts = _Texts(corpus, heldout)
        teacher, tokenizer = modeling.load(model)
        teacher, tokenizer, metrics = adapt_stage(teacher, tokenizer, texts.corpus, texts.heldout, adapt, device=device)
        _save(out, teacher, tokenizer, metrics)

    return str(cached(cache_dir, key, build))


@dataclass
class _Ref:
    """A model by cache key: an existing directory, or a builder for one."""

    key: str
    path: Path | None = None
    build: Callable[[Path], None] | None = None
    cache_dir: str = ""

    def materialise(self) -> Path:
        if self.path is None:
            self.path = cached(self.cache_dir, self.key, self.build)
        return self.path


def run_trial(plan: TrialPlan, progress: Progress | None = None) -> dict:
    """Build the candidate's student stage by stage (cached), then evaluate it on ``plan.tasks``.

    Returns:
        a JSON-able dict: ``model_dir, params, disk_mb, timings, stage_keys, cached, stages``
        (each stage's metrics), ``scores, tasks, quality`` (when tasks are given), ``config``, and
        ``latency_ms`` when ``plan.measure_latency``.

    Raises:
        UsageError: for an impossible candidate or order, or bad data.
        FloatingPointError: when a training loss becomes NaN or infinite.
    """
    report = progress or (lambda message: None)
    if sorted(plan.order) != sorted(STAGES):
        raise UsageError(f"order {list(plan.order)} must be a permutation of {list(STAGES)}")
    teacher_config = modeling.load_config(plan.teacher)
    _check_candidate(plan.candidate, teacher_config)
    texts = _Texts(plan.corpus, plan.heldout)
    teacher = _Ref(input_key(plan.teacher), Path(plan.teacher))
    current, kd_teacher = teacher, teacher
    result: dict = {"timings": {}, "stage_keys": {}, "cached": [], "stages": {}}
    for stage in plan.order:
        started = time.perf_counter()
        before = current
        current, kd_teacher = _STAGE_RUNNERS[stage](plan, texts, current, kd_teacher, teacher)
        if current is before:
            report(f"{stage}: identity for this candidate, skipped")
            continue
        hit = current.path is None and (Path(plan.cache_dir) / current.key / ".complete").is_file()
        path = current.materialise()
        result["timings"][stage] = round(time.perf_counter() - started, 3)
        result["stage_keys"][stage] = current.key
        result["stages"][stage] = _read_metrics(path)
        if hit:
            result["cached"].append(stage)
        report(f"{stage}: {'cached' if hit else 'built'} {current.key} in {result['timings'][stage]:.1f}s")
    model_dir = str(current.materialise())
    final_config = modeling.load_config(model_dir)
    result.update(model_dir=model_dir, **_describe(model_dir, final_config))
    started = time.perf_counter()
    scores = _evaluate_all(model_dir, current.key, plan.tasks, plan.evaluation, plan.cache_dir, plan.device, progress)
    result.update(scores)
    result["timings"]["evaluate"] = round(time.perf_counter() - started, 3)
    if plan.measure_latency:
        from pipeline.measure import latency_ms

        result["latency_ms"] = latency_ms(model_dir, device=plan.device)
    return result


def teacher_reference(teacher_dir: str, tasks: dict[str, TaskSource], evaluation: EvalConfig, cache_dir: str,
                      device: str | None = None, progress: Progress | None = None) -> dict:
    """The teacher's own scores (cached per task and evaluation config), with its size."""
    result = {"model_dir": str(teacher_dir), **_describe(teacher_dir, modeling.load_config(teacher_dir))}
    result.update(_evaluate_all(teacher_dir, input_key(teacher_dir), tasks, evaluation, cache_dir, device, progress))
    return result


def _check_candidate(candidate: Candidate, teacher: dict) -> None:
    heads = teacher["num_attention_heads"]
    limits = {
        "num_hidden_layers": "layers",
        "intermediate_size": "FFN size",
        "hidden_size": "hidden size",
        "vocab_size": "vocabulary size",
    }
    for key, name in limits.items():
        value = getattr(candidate, key)
        if value is not None and not 1 <= value <= teacher[key]:
            raise UsageError(f"candidate {name} {value} must be between 1 and the teacher's {teacher[key]}")
    if candidate.hidden_size % heads:
        raise UsageError(
            f"candidate hidden size {candidate.hidden_size} is not divisible by num_attention_heads={heads}"
        )


def _child(plan: TrialPlan, parent: _Ref, stage: str, config: dict, build: Callable[[Path], None]) -> _Ref:
    return _Ref(stage_key(parent.key, stage, config), build=build, cache_dir=plan.cache_dir)


def _run_distill(plan, texts, current, kd_teacher, teacher):
    layers, init = plan.candidate.num_hidden_layers, plan.candidate.init
    if layers == modeling.load_config(str(current.materialise()))["num_hidden_layers"]:
        return current, kd_teacher
    config = {"layers": layers, "init": init, "distill": plan.distill, "teacher": kd_teacher.key,
              "corpus": plan.corpus, "heldout": plan.heldout}

    def build(out: Path) -> None:
        from pipeline.distill import distill, init_student, layer_indices

        source, tokenizer = modeling.load(current.materialise())
        big, _ = modeling.load(kd_teacher.materialise())
        student = init_student(source, layers, init, seed=plan.distill.seed)
        student, tokenizer, metrics = distill(
            student, big, tokenizer, texts.corpus, texts.heldout, plan.distill, device=plan.device
        )
        metrics["teacher_layers"] = layer_indices(source.config.num_hidden_layers, layers, init)
        _save(out, student, tokenizer, metrics)

    return _child(plan, current, "distill", config, build), kd_teacher


def _run_prune(plan, texts, current, kd_teacher, teacher):
    ffn = plan.candidate.intermediate_size
    if ffn == modeling.load_config(str(current.materialise()))["intermediate_size"]:
        return current, kd_teacher
    config = {"ffn": ffn, "prune": plan.prune, "heldout": plan.heldout}

    def build(out: Path) -> None:
        from pipeline.prune import prune_ffn

        model, tokenizer = modeling.load(current.materialise())
        model, tokenizer, metrics = prune_ffn(model, tokenizer, ffn, texts.heldout, plan.prune, device=plan.device)
        _save(out, model, tokenizer, metrics)

    return _child(plan, current, "prune", config, build), kd_teacher


def _run_truncate(plan, texts, current, kd_teacher, teacher):
    hidden, cfg = plan.candidate.hidden_size, plan.truncate
    if hidden == modeling.load_config(str(current.materialise()))["hidden_size"]:
        return current, kd_teacher
    second_teacher = current if cfg.teacher == "pruned" else kd_teacher
    config = {"hidden": hidden, "method": cfg.method, "teacher": second_teacher.key, "distill": cfg.distill,
              "corpus": plan.corpus, "heldout": plan.heldout}

    def build(out: Path) -> None:
        from pipeline.distill import distill
        from pipeline.truncate import truncate_hidden

        model, tokenizer = modeling.load(current.materialise())
        big, _ = modeling.load(second_teacher.materialise())
        student, tokenizer = truncate_hidden(model, tokenizer, hidden, cfg.method)
        del model
        student, tokenizer, metrics = distill(
            student, big, tokenizer, texts.corpus, texts.heldout, cfg.distill, device=plan.device
        )
        _save(out, student, tokenizer, metrics)

    return _child(plan, current, "truncate", config, build), kd_teacher


def _run_trim_vocab(plan, texts, current, kd_teacher, teacher):
    size = plan.candidate.vocab_size
    if size is None or size >= modeling.load_config(str(current.materialise()))["vocab_size"]:
        return current, kd_teacher
    config = {"vocab_size": size, "trim_vocab": plan.trim_vocab, "corpus": plan.corpus}

    def trimmer(source: _Ref) -> Callable[[Path], None]:
        def build(out: Path) -> None:
            from pipeline.trim_vocab import trim_vocab

            model, tokenizer = modeling.load(source.materialise())
            model, tokenizer, metrics = trim_vocab(model, tokenizer, texts.corpus, size, plan.trim_vocab)
            _save(out, model, tokenizer, metrics)

        return build

    # Later distillations need a teacher with the same ids: the same counts on the same tokenizer keep
    # the same pieces, so the teacher is trimmed alike (built only if a distillation needs it).
    trimmed_teacher = _child(plan, kd_teacher, "trim_vocab", config, trimmer(kd_teacher))
    return _child(plan, current, "trim_vocab", config, trimmer(current)), trimmed_teacher


_STAGE_RUNNERS = {
    "distill": _run_distill,
    "prune": _run_prune,
    "truncate": _run_truncate,
    "trim_vocab": _run_trim_vocab,
}


def _evaluate_all(model_dir: str, key: str, tasks: dict[str, TaskSource], evaluation: EvalConfig,
                  cache_dir: str, device: str | None, progress: Progress | None) -> dict:
    if not tasks:
        return {"scores": {}, "tasks": {}}
    from pipeline.evaluate import evaluate_task

    details = {}
    for task, source in tasks.items():
        def build(out: Path, task=task, source=source) -> None:
            outcome = evaluate_task(str(model_dir), task, source, evaluation, device=device, progress=progress)
            (out / "result.json").write_text(json.dumps(outcome, indent=2), encoding="utf-8")

        task_key = stage_key(key, "evaluate", {"task": task, "source": source, "evaluation": evaluation})
        path = cached(cache_dir, task_key, build)
        details[task] = json.loads((path / "result.json").read_text(encoding="utf-8"))
    scores = {task: details[task]["mean"] for task in details}
    finite = [value for value in scores.values() if value is not None and math.isfinite(value)]
    result = {"scores": scores, "tasks": details}
    if finite:
        result["quality"] = statistics.fmean(finite)
    return result


def _describe(model_dir: str, config: dict) -> dict:
    from pipeline.measure import disk_mb

    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")
    return {
        "params": config_parameters(config),
        "disk_mb": disk_mb(model_dir),
        "config": {key: config[key] for key in keys},
    }


def _save(out: Path, model, tokenizer, metrics: dict) -> None:
    modeling.save(model, tokenizer, out)
    modeling.write_metrics(out, metrics)


def _read_metrics(path: Path) -> dict:
    file = Path(path) / "metrics.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


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
    kwargs = {}
    for name, raw in value.items():
        kwargs[name] = _convert(hints[name], raw, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise UsageError(f"{where}: {error}") from None


def _convert(hint, raw, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, where)
    if origin is tuple:
        return tuple(raw)
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return {key: _build(args[1], item, f"{where}.{key}") for key, item in raw.items()}
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", help="a JSON file with the fields of TrialPlan")
    parser.add_argument("--out", default=None, help="write the result JSON here (default: stdout)")
    parser.add_argument("--device", default=None, help="override the plan's device")


def main(args: argparse.Namespace) -> int:
    try:
        data = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{args.plan}: cannot read plan ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{args.plan}:{error.lineno}: invalid JSON ({error.msg})") from None
    plan = plan_from_dict(data)
    if args.device:
        plan = dataclasses.replace(plan, device=args.device)
    result = run_trial(plan, progress=lambda message: log.info("%s", message))
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0
