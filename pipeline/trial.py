"""One candidate of the search, start to finish: the planned stage builds, then evaluation.

`pipeline.plan.plan_steps` says which stages run and under which cache keys; `run_trial` walks that
list, building each missing output once (`pipeline.cache.cached`) with the stage's builder below, then
evaluates the final model on the plan's tasks (each task's result cached too).

``python -m pipeline trial PLAN.json`` runs one plan without Ray; the search calls `run_trial`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import modeling
from pipeline.cache import cached, is_complete, stage_key
from pipeline.config import (AdaptConfig, CorpusSource, EvalConfig, LatencyConfig, ScratchConfig, SignalConfig,
                             TaskSource)
from pipeline.errors import UsageError
from pipeline.modeldir import check_model_dir, read_json
from pipeline.plan import Step, TrialPlan, input_key, plan_from_dict, plan_steps
from pipeline.sizes import parameter_groups

__all__ = ["build_student", "build_teacher", "evaluate_model", "prepare_teacher", "run_trial", "score_student",
           "screen_student", "teacher_reference"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
_STATE = "train_state.safetensors"  # a stopped distillation's state, beside its model, for a longer rung to continue


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
                    cache_dir: str, device: str | None = None, *, trust_remote_code: bool = False,
                    allow_pickle: bool = False) -> str:
    """The (language-adapted) teacher's directory: adapted once per key, or ``model`` when adaptation is off.

    With ``trust_remote_code`` or ``allow_pickle`` (a spec's opt-ins) the teacher is first read once with
    that permission and kept in the cache as a plain safetensors copy without ``auto_map``, so every later
    stage loads it with the safe defaults.
    """
    if trust_remote_code or allow_pickle:
        model = _import_teacher(model, cache_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if not adapt.enabled:
        return str(model)
    key = stage_key(input_key(model), "adapt", {"adapt": adapt, "corpus": corpus, "heldout": heldout})

    def build(out: Path) -> None:
        from pipeline.adapt import adapt as adapt_stage

        texts = _Texts(corpus, heldout)
        teacher, tokenizer = modeling.load(model)
        teacher, tokenizer, metrics = adapt_stage(teacher, tokenizer, texts.corpus, texts.heldout, adapt, device=device)
        _save(out, teacher, tokenizer, metrics)

    return str(cached(cache_dir, key, build, verify=_output_problem))


def _import_teacher(model: str, cache_dir: str, *, trust_remote_code: bool, allow_pickle: bool) -> str:
    key = stage_key(input_key(model), "import", {"trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle})

    def build(out: Path) -> None:
        teacher, tokenizer = modeling.load(model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        modeling.save(teacher, tokenizer, out)
        for name in ("config.json", "tokenizer_config.json"):  # the copy must load without the folder's code
            file = out / name
            if file.is_file():
                values = read_json(file)
                if values.pop("auto_map", None) is not None:
                    file.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    return str(cached(cache_dir, key, build, verify=_output_problem))


def build_teacher(build: ScratchConfig, adapt: AdaptConfig, corpus: CorpusSource, heldout: CorpusSource,
                  cache_dir: str, device: str | None = None) -> str:
    """A teacher trained from scratch on ``corpus`` (tokenizer included), built once per key.

    Raises:
        UsageError: when the corpus yields fewer tokenizer pieces than ``build.vocab_size``.
    """
    key = stage_key("scratch", "build", {"build": build, "adapt": adapt, "corpus": corpus, "heldout": heldout})

    def make(out: Path) -> None:
        from pipeline.adapt import pretrain_from_scratch
        from pipeline.families import scratch_config
        from pipeline.vocab import train_tokenizer

        texts = _Texts(corpus, heldout)
        tokenizer = train_tokenizer(build.family, texts.corpus, build.vocab_size)
        sizes = {name: getattr(build, name) for name in ("vocab_size", "num_hidden_layers", "hidden_size",
                                                          "num_attention_heads", "intermediate_size", "max_length")}
        model, tokenizer, metrics = pretrain_from_scratch(scratch_config(build.family, **sizes), tokenizer,
                                                          texts.corpus, texts.heldout, adapt, device=device)
        _save(out, model, tokenizer, metrics)

    return str(cached(cache_dir, key, make))


def build_student(plan: TrialPlan, progress: Progress | None = None) -> dict:
    """Build the candidate's student stage by stage (each output cached), without evaluating it.

    Returns:
        a JSON-able dict: ``model_dir, params, sizes, disk_mb, config``, ``timings`` and ``cpu_s``
        (wall and CPU seconds per stage; a trimmed teacher copy's under ``teacher_trim_vocab``),
        ``stage_keys``, ``cached`` (the stages found in the cache), ``stages`` (each stage's metrics),
        ``settings``, ``notes`` (stage outcomes a person should know of, such as a trimmed vocabulary
        smaller than asked; absent when there are none), ``builds`` (one entry per step, teacher copies included: ``stage, key, built,
        wall_s, cpu_s, rung, for_teacher``; ``built`` is false when the output was found in the cache
        or another process built it meanwhile) and ``rung`` when the last distillation ran at one.

    Raises:
        UsageError: for an impossible candidate or order, or bad data.
        FloatingPointError: when a training loss becomes NaN or infinite.
    """
    report = progress or (lambda message: None)
    teacher_key = input_key(plan.teacher)
    steps = plan_steps(plan, teacher_key, modeling.load_config(plan.teacher))
    built = {step.stage for step in steps if not step.for_teacher}
    for stage in plan.order:
        if stage not in built:
            report(f"{stage}: identity for this candidate, skipped")
    texts = _Texts(plan.corpus, plan.heldout)
    paths = {teacher_key: Path(plan.teacher) if Path(plan.teacher).is_dir() else plan.teacher}
    result: dict = {"timings": {}, "cpu_s": {}, "stage_keys": {}, "cached": [], "stages": {}, "settings": {},
                    "builds": []}
    for step in steps:
        started, cpu = time.perf_counter(), time.process_time()
        built: list[str] = []  # whether this process built the step (another may have while we waited)

        def build(out: Path, step: Step = step) -> None:
            built.append(step.key)
            began, began_cpu = time.perf_counter(), time.process_time()
            _BUILDERS[step.stage](plan, texts, step, paths[step.source], paths.get(step.teacher), out)
            # what the build cost stays with its output, for every later trial that reuses it
            modeling.write_metrics(out, {**_read_metrics(out), "build_wall_s": round(time.perf_counter() - began, 3),
                                         "build_cpu_s": round(time.process_time() - began_cpu, 3)})

        paths[step.key] = cached(plan.cache_dir, step.key, build, verify=_output_problem)
        hit = not built
        seconds = round(time.perf_counter() - started, 3)
        metrics = _read_metrics(paths[step.key])
        trained = metrics["stop_at"] - (metrics.get("resumed_from") or 0) if "stop_at" in metrics else metrics.get("steps")
        result["builds"].append({"stage": step.stage, "key": step.key, "built": not hit, "wall_s": seconds,
                                 "cpu_s": round(time.process_time() - cpu, 3), "rung": step.rung,
                                 "for_teacher": step.for_teacher, "steps": trained or 0,
                                 "build_cpu_s": metrics.get("build_cpu_s"), "build_wall_s": metrics.get("build_wall_s")})
        name = f"teacher_{step.stage}" if step.for_teacher else step.stage
        result["timings"][name], result["cpu_s"][name] = seconds, result["builds"][-1]["cpu_s"]
        if step.for_teacher:
            continue
        result["stage_keys"][step.stage] = step.key
        if step.rung is not None:
            result["rung"] = step.rung
        result["stages"][step.stage] = metrics
        result["settings"][step.stage] = _settings(plan, step)
        if hit:
            result["cached"].append(step.stage)
        report(f"{step.stage}: {'cached' if hit else 'built'} {step.key} in {seconds:.1f}s")
        if metrics.get("note"):  # e.g. a trimmed vocabulary smaller than asked
            result.setdefault("notes", []).append(f"{step.stage}: {metrics['note']}")
            report(f"{step.stage}: {metrics['note']}")
    final_key = steps[-1].key if steps else teacher_key
    model_dir = str(paths[final_key])
    result.update(model_dir=model_dir, final_key=final_key, **_describe(model_dir, modeling.load_config(model_dir)))
    return result


def run_trial(plan: TrialPlan, progress: Progress | None = None) -> dict:
    """Build the candidate's student stage by stage (cached, `build_student`), then evaluate it on ``plan.tasks``.

    Returns:
        `build_student`'s dict and: ``scores`` and ``quality`` (dev: the mean over seeds per task, and
        over tasks), ``test_scores`` and ``test_quality`` (the same on test), ``tasks`` (each task's
        full result) and ``latency_ms``; ``timings`` and ``cpu_s`` also hold ``evaluate`` and ``latency``.

    Raises:
        UsageError: for an impossible candidate or order, or bad data.
        FloatingPointError: when a training loss becomes NaN or infinite.
    """
    report = progress or (lambda message: None)
    result = build_student(plan, progress)
    model_dir = result["model_dir"]
    started, cpu = time.perf_counter(), time.process_time()
    result.update(evaluate_model(model_dir, result["final_key"], plan.tasks, plan.scoring, plan.cache_dir,
                                 plan.device, progress))
    result["timings"]["evaluate"] = round(time.perf_counter() - started, 3)
    result["cpu_s"]["evaluate"] = round(time.process_time() - cpu, 3)
    _add_latency(result, plan)
    report(f"latency: {result['latency_ms']:.2f} ms on {plan.latency.runtime}")
    return result


def score_student(plan: TrialPlan, signal: str, evaluation: EvalConfig | None, cfg: SignalConfig,
                  progress: Progress | None = None, *, latency: bool = False) -> dict:
    """Build the candidate's student (at ``plan.rung`` of ``plan.rungs`` under multi-fidelity) and take
    one cheap signal of it (`pipeline.signals.measure`) instead of the full evaluation.

    Args:
        plan: the trial plan with its candidate.
        signal: ``mlm``, ``probe`` or ``capped`` (``distill`` needs a teacher trimmed like each student).
        evaluation: the capped evaluation (``capped``).
        cfg: how held-out losses and probes are taken.
        latency: also measure the student's latency as `run_trial` does (``latency_ms``).

    Returns:
        `build_student`'s dict and ``signal``: ``{"name", "value", "better", "parts", "cpu_s"}``; ``timings``
        and ``cpu_s`` also hold ``signal`` (and ``latency``).

    Raises:
        UsageError: for an impossible candidate, bad data, or a signal this function does not take.
    """
    from pipeline.signals import measure

    if signal not in ("mlm", "probe", "capped"):
        raise UsageError(f"a student is scored cheaply by mlm, probe or capped, not {signal!r}")
    result = build_student(plan, progress)
    heldout = _Texts(plan.corpus, plan.heldout).heldout if signal == "mlm" else None
    measured = measure(signal, result["model_dir"], heldout=heldout, tasks=plan.tasks, evaluation=evaluation, cfg=cfg,
                       device=plan.device)
    result["signal"] = {"name": signal, "value": measured["value"], "better": measured["better"],
                        "parts": measured["parts"], "cpu_s": measured["cpu_s"]}
    result["timings"]["signal"], result["cpu_s"]["signal"] = measured["wall_s"], measured["cpu_s"]
    if progress:
        progress(f"{signal}: {measured['value']:.4f} in {measured['cpu_s']:.1f} CPU s")
    if latency:
        _add_latency(result, plan)
    return result


def screen_student(plan: TrialPlan, signal: str, evaluation: EvalConfig | None, cfg: SignalConfig,
                   progress: Progress | None = None) -> dict:
    """The candidate's student at rung 0 and one cheap signal of it (`score_student`).

    Rung 0 is the student after its training-free stages, before its last distillation trains (the
    stages before that one, such as the depth distillation, are built in full and shared through the
    cache as in any trial). The builds are keyed like a multi-fidelity rung of ``plan.rungs`` (when the
    plan has none, of a one-step schedule: nothing trains at rung 0 either way).

    Returns:
        ``{"value", "better", "params", "parts", "build_cpu_s" (this process's CPU seconds building),
        "signal_cpu_s", "model_dir", "builds"}``.

    Raises:
        UsageError: for an impossible candidate, bad data, or a signal this function does not take.
    """
    rungs = (0, max(plan.rungs)) if plan.rungs else (0, 1)
    result = score_student(dataclasses.replace(plan, rung=0, rungs=rungs), signal, evaluation, cfg, progress)
    measured = result["signal"]
    return {"value": measured["value"], "better": measured["better"], "params": result["params"],
            "parts": measured["parts"], "build_cpu_s": round(sum(b["cpu_s"] for b in result["builds"]), 3),
            "signal_cpu_s": measured["cpu_s"], "model_dir": result["model_dir"], "builds": result["builds"]}


def teacher_reference(teacher_dir: str, tasks: dict[str, TaskSource], evaluation: EvalConfig, cache_dir: str,
                      device: str | None = None, progress: Progress | None = None,
                      latency: LatencyConfig | None = None) -> dict:
    """The teacher's own scores (cached per task and evaluation config), with its size and, when
    ``latency`` is given, its latency measured the same way as every student's."""
    result = {"model_dir": str(teacher_dir), **_describe(teacher_dir, modeling.load_config(teacher_dir))}
    result.update(evaluate_model(teacher_dir, input_key(teacher_dir), tasks, evaluation, cache_dir, device, progress))
    if latency is not None:
        result["latency_ms"] = _latency(teacher_dir, latency, device)
    return result


def _add_latency(result: dict, plan: TrialPlan) -> None:
    """The latency of ``result``'s student (``latency_ms``), with its wall and CPU seconds in ``timings``
    and ``cpu_s``."""
    started, cpu = time.perf_counter(), time.process_time()
    result["latency_ms"] = _latency(result["model_dir"], plan.latency, plan.device)
    result["timings"]["latency"] = round(time.perf_counter() - started, 3)
    result["cpu_s"]["latency"] = round(time.process_time() - cpu, 3)


def _latency(model_dir: str, cfg: LatencyConfig, device: str | None) -> float:
    from pipeline.measure import latency_ms

    return latency_ms(model_dir, cfg, device=device if cfg.runtime == "torch" else None)


def _settings(plan: TrialPlan, step: Step) -> dict:
    """What ``step`` was given, for the lineage of a model card: its size and the settings that matter."""
    sizes = step.sizes
    if step.stage == "distill":
        d = plan.distill
        return {"layers": sizes["num_hidden_layers"], "init": plan.candidate.init, "alpha": d.alpha,
                "kd_loss": d.kd_loss, "lr": d.lr, "batch_size": d.batch_size, "steps": d.steps, "epochs": d.epochs,
                "max_length": d.max_length}
    if step.stage == "prune":
        return {"ffn": sizes["intermediate_size"], "method": plan.prune.method,
                "reorder_heads": plan.prune.reorder_heads, "max_batches": plan.prune.max_batches}
    if step.stage == "truncate":
        d = plan.truncate.distill
        return {"hidden": sizes["hidden_size"], "method": plan.truncate.method, "teacher": plan.truncate.teacher,
                "alpha": d.alpha, "kd_loss": d.kd_loss, "lr": d.lr, "steps": d.steps, "epochs": d.epochs}
    return {"vocab_size": sizes["vocab_size"], "min_count": plan.trim_vocab.min_count,
            "counting": plan.trim_vocab.counting}


# ---------------------------------------------------------------- one builder per stage
# Each writes the stage's output for ``step`` into ``out``: ``source`` is the model it edits, ``teacher``
# the distillation teacher (a directory or hub id).


def _rung(plan: TrialPlan, step: Step, cfg, out: Path):
    """The distillation settings of ``step`` and its `Fidelity`: a multi-fidelity step trains ``step.rung``
    steps of a ``max(plan.rungs)``-step schedule, continuing from the highest lower rung in the cache."""
    if step.rung is None:
        return cfg, None
    from pipeline.training import Fidelity

    longest = max(plan.rungs)
    resume = next((str(Path(plan.cache_dir) / key / _STATE) for key in step.resume
                   if is_complete(Path(plan.cache_dir) / key) and (Path(plan.cache_dir) / key / _STATE).is_file()), None)
    save = str(out / _STATE) if step.rung < longest else None
    return dataclasses.replace(cfg, steps=longest), Fidelity(step.rung, tuple(plan.rungs), resume=resume, save=save)


def _build_distill(plan: TrialPlan, texts: _Texts, step: Step, source, teacher, out: Path) -> None:
    from pipeline.distill import distill, init_student, layer_indices

    layers, init = step.sizes["num_hidden_layers"], plan.candidate.init
    model, tokenizer = modeling.load(source)
    big, _ = modeling.load(teacher)
    student = init_student(model, layers, init, seed=plan.distill.seed)
    cfg, fidelity = _rung(plan, step, plan.distill, out)
    student, tokenizer, metrics = distill(student, big, tokenizer, texts.corpus, texts.heldout, cfg,
                                          device=plan.device, fidelity=fidelity, scratch=out)
    metrics["teacher_layers"] = layer_indices(model.config.num_hidden_layers, layers, init)
    _save(out, student, tokenizer, metrics)


def _build_prune(plan: TrialPlan, texts: _Texts, step: Step, source, teacher, out: Path) -> None:
    from pipeline.prune import prune_ffn

    model, tokenizer = modeling.load(source)
    model, tokenizer, metrics = prune_ffn(model, tokenizer, step.sizes["intermediate_size"], texts.heldout,
                                          plan.prune, device=plan.device)
    _save(out, model, tokenizer, metrics)


def _build_truncate(plan: TrialPlan, texts: _Texts, step: Step, source, teacher, out: Path) -> None:
    from pipeline.distill import distill
    from pipeline.truncate import truncate_hidden

    model, tokenizer = modeling.load(source)
    big, _ = modeling.load(teacher)
    student, tokenizer = truncate_hidden(model, tokenizer, step.sizes["hidden_size"], plan.truncate.method)
    del model
    cfg, fidelity = _rung(plan, step, plan.truncate.distill, out)
    student, tokenizer, metrics = distill(student, big, tokenizer, texts.corpus, texts.heldout, cfg,
                                          device=plan.device, fidelity=fidelity, scratch=out)
    _save(out, student, tokenizer, metrics)


def _build_trim_vocab(plan: TrialPlan, texts: _Texts, step: Step, source, teacher, out: Path) -> None:
    from pipeline.trim_vocab import trim_vocab

    model, tokenizer = modeling.load(source)
    model, tokenizer, metrics = trim_vocab(model, tokenizer, texts.corpus, step.sizes["vocab_size"], plan.trim_vocab)
    _save(out, model, tokenizer, metrics)


_BUILDERS = {
    "distill": _build_distill,
    "prune": _build_prune,
    "truncate": _build_truncate,
    "trim_vocab": _build_trim_vocab,
}


def evaluate_model(model_dir: str, key: str, tasks: dict[str, TaskSource], evaluation: EvalConfig,
                   cache_dir: str, device: str | None = None, progress: Progress | None = None) -> dict:
    """Every task of ``tasks`` on the model in ``model_dir`` (cache key ``key``), each task's result cached,
    and each seed's apart (`_evaluate_seeds`).

    Returns:
        ``scores`` (dev, the mean over seeds per task), ``test_scores``, ``tasks`` (each task's
        `pipeline.evaluate.evaluate_task` result) and ``quality`` / ``test_quality`` (means over tasks).
    """
    if not tasks:
        return {"scores": {}, "test_scores": {}, "tasks": {}}
    details = {}
    for task, source in tasks.items():
        def task_key(config: EvalConfig, task=task, source=source) -> str:
            return stage_key(key, "evaluate", {"task": task, "source": source, "evaluation": config})

        def build(out: Path, task=task, source=source) -> None:
            outcome = _evaluate_seeds(model_dir, task, source, evaluation, cache_dir, task_key, device, progress)
            _write_result(out, outcome)

        path = cached(cache_dir, task_key(evaluation), build, verify=_result_problem)
        details[task] = read_json(path / "result.json")
    # Selection uses dev scores; test scores are reported beside them, never used to choose.
    scores = {task: statistics.fmean(details[task]["dev_scores"]) for task in details}
    test_scores = {task: details[task]["mean"] for task in details}
    result = {"scores": scores, "test_scores": test_scores, "tasks": details}
    for name, values in (("quality", scores), ("test_quality", test_scores)):
        finite = [value for value in values.values() if value is not None and math.isfinite(value)]
        if finite:
            result[name] = statistics.fmean(finite)
    return result


def _evaluate_seeds(model_dir: str, task: str, source: TaskSource, evaluation: EvalConfig, cache_dir: str,
                    task_key: Callable[[EvalConfig], str], device: str | None, progress: Progress | None) -> dict:
    """`evaluate_task` of ``evaluation``'s seeds, each seed cached apart under the key of a one-seed
    evaluation (``task_key``): an evaluation of more seeds reuses the seeds already scored (a pilot's
    one seed, a search that raises its seeds) and trains only the others, together."""
    from pipeline.evaluate import combine_seeds, evaluate_task, split_seeds

    one = {seed: dataclasses.replace(evaluation, seeds=(seed,)) for seed in evaluation.seeds}
    if len(one) == 1:
        return evaluate_task(str(model_dir), task, source, evaluation, device=device, progress=progress)
    missing = tuple(seed for seed, config in one.items() if not is_complete(Path(cache_dir) / task_key(config)))
    fresh = {}
    if missing:
        scored = evaluate_task(str(model_dir), task, source, dataclasses.replace(evaluation, seeds=missing),
                               device=device, progress=progress)
        fresh = dict(zip(missing, split_seeds(scored)))
    parts = []
    for seed, config in one.items():
        def build(out: Path, seed=seed, config=config) -> None:  # a seed found damaged is scored again alone
            _write_result(out, fresh.get(seed) or evaluate_task(str(model_dir), task, source, config, device=device,
                                                                progress=progress))

        parts.append(read_json(cached(cache_dir, task_key(config), build, verify=_result_problem) / "result.json"))
    return combine_seeds(parts)


def _write_result(out: Path, result: dict) -> None:
    (out / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


def _describe(model_dir: str, config: dict) -> dict:
    from pipeline.measure import disk_mb

    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")
    sizes = parameter_groups(config)
    return {
        "params": sizes["total"],
        "sizes": sizes,
        "disk_mb": disk_mb(model_dir),
        "config": {key: config[key] for key in keys},
    }


def _save(out: Path, model, tokenizer, metrics: dict) -> None:
    modeling.save(model, tokenizer, out)
    modeling.write_metrics(out, metrics)


def _read_metrics(path: Path) -> dict:
    file = Path(path) / "metrics.json"
    return read_json(file) if file.is_file() else {}


def _output_problem(path: Path) -> str | None:
    """What is wrong with a cached stage output (a model folder and its metrics), or None."""
    try:
        check_model_dir(path)
        _read_metrics(path)
    except UsageError as error:
        return str(error)
    return None


def _result_problem(path: Path) -> str | None:
    """What is wrong with a cached evaluation (``result.json``), or None."""
    try:
        result = read_json(Path(path) / "result.json")
    except UsageError as error:
        return str(error)
    missing = [key for key in ("dev_scores", "mean") if key not in result]
    return f"result.json lacks {', '.join(missing)}" if missing else None


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
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")  # renamed into place: never half-written
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out)
    else:
        print(text)
    return 0
