"""The search: prepare once, run the trials on Ray Tune, keep the records and the Pareto front, write MLflow.

``run_search(spec, resume)`` prepares the teacher and its reference scores (`search.prepare`), opens the
search's parent run (`search.tracking`), and runs the trials (`search.tuner`). The search's state is
the `search.book.TrialBook`'s: one plain record per trial, the front recomputed after each one, the
teacher reference and the registry aliases; the tracker is told only what changed. ``--resume``
reads the records back from MLflow once and restores the Tune experiment (searcher state included);
a trial already logged is never logged again. Each search keeps the spec it started with, its file and
its ``--set`` in ``lrl-search.json`` beside Ray's state, so that `resume_spec` finds it again without
the original ``--set``. Before the teacher is prepared, the folders, the tracking store and (on a
cluster) every node's view of the folders are checked; each problem is one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Candidate
from search.book import TrialBook, last_line
from search.folders import check_writable, input_paths, leave_ray_package, search_folders
from search.schema import MODEL_METRICS, Spec, slug
from search.space import label

__all__ = [
    "SEARCH_RECORD", "SearchResult", "experiment_name", "pareto_markdown", "pareto_table",
    "record_search", "resume_spec", "run_search", "search", "spec_hash",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- identity
def spec_hash(spec: Spec) -> str:
    """Short sha256 of the spec, without ``ray`` and ``export`` (where it runs, and what is exported
    when it ends, do not change what it searches: a resume still finds the search)."""
    data = {k: v for k, v in spec.model_dump(mode="json").items() if k not in ("ray", "export")}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def experiment_name(spec: Spec, storage_path: Path, resume: bool) -> str:
    """``<experiment>-<hash>`` for the first search of a spec, ``...-2``, ``...-3`` for later fresh
    ones; ``resume`` picks the latest that exists."""
    base = f"{slug(spec.mlflow.experiment)}-{spec_hash(spec)}"
    names = [base] + [f"{base}-{i}" for i in range(2, 1000)]
    existing = [n for n in names if (storage_path / n).exists()]
    if resume:
        return existing[-1] if existing else base
    return next(n for n in names if not (storage_path / n).exists())


# ---------------------------------------------------------------------------- the search
@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search leaves: its name, every trial record, the front (best first objective first),
    the teacher's reference scores, the wall seconds it took and its MLflow experiment."""

    name: str
    records: list[dict[str, Any]]
    members: list[dict[str, Any]]
    reference: dict[str, Any]
    seconds: float
    experiment_id: str | None = None


def run_search(spec: Spec, resume: bool = False, *, spec_file: str | None = None,
               overrides: Sequence[str] = ()) -> int:
    """Run (or with ``resume`` continue) the search described by ``spec`` and print its front.

    Everything that can refuse the search does so before the teacher is prepared or a trial starts:
    the search's folders must be writable and the tracking store usable (one line naming the field),
    and on a cluster every node must see the same folders and inputs (`search.tuner.check_nodes`).

    Args:
        spec: the validated spec.
        resume: continue the latest search of this spec (`resume_spec` finds it when ``--set`` differ).
        spec_file: the spec's file, recorded with the search so that a resume can find it.
        overrides: the ``--set`` strings, recorded likewise.

    Returns:
        0 when at least one trial finished, 1 otherwise.
    """
    from search.tracking import ui_command

    result = search(spec, resume, spec_file=spec_file, overrides=overrides)
    objectives = [(o.metric, o.direction) for o in spec.objectives]
    finished = sum(not r["failed"] for r in result.records)
    print(pareto_table(result.members, objectives, result.reference))
    print(f"\n{finished} trials finished, {len(result.records) - finished} failed, "
          f"{len(result.members)} on the Pareto front, {result.seconds:.0f} s.")
    print(f"Optuna study: {result.name} in {spec.study_storage}")
    if spec.export is not None and result.members:
        from search.export import export_student

        # The search's own output folder, like its MLflow store: replaced on every run.
        print(export_student(spec.mlflow.tracking_uri, spec.export.out, alias=spec.export.alias,
                             model_name=spec.mlflow.registered_model, onnx=spec.export.onnx, int8=spec.export.int8,
                             force=True))
    print(f"Open the MLflow UI:\n  {ui_command(spec.mlflow.tracking_uri, result.experiment_id)}")
    return 0 if finished else 1


def search(spec: Spec, resume: bool = False, *, spec_file: str | None = None,
           overrides: Sequence[str] = ()) -> SearchResult:
    """Run (or with ``resume`` continue) the search described by ``spec``; nothing is printed."""
    import torch
    import yaml

    from pipeline.runtimes import available_cores
    from search.prepare import prepare
    from search.tracking import Tracker
    from search.tuner import check_nodes, rescore, run_tuner, start_ray

    storage = Path(spec.search.storage_path)
    shared = search_folders(spec)
    check_writable(shared, create=False)  # every folder and the store proven before any is made
    name = experiment_name(spec, storage, resume)
    objectives = [(o.metric, o.direction) for o in spec.objectives]
    started = time.time()
    tracker = Tracker(spec.mlflow.tracking_uri, spec.mlflow.experiment, search=name, spec_hash=spec_hash(spec),
                      objectives=objectives, registered_model=spec.mlflow.registered_model,
                      artifact_location=spec.mlflow.artifact_location)
    check_writable(shared)
    record_search(storage / name, spec, spec_file, overrides)
    logger.info("search %s: %d trials, %d at a time, objectives %s", name, spec.search.num_samples,
                spec.search.max_concurrent, ", ".join(f"{m} {d}" for m, d in objectives))
    leave_ray_package()  # before any task: a node that unpacks the job's package again deletes it (ray job submit)
    start_ray(spec.ray.address)
    if spec.ray.address != "local":
        check_nodes(shared, input_paths(spec))
    # The driver builds and scores the teacher before any trial runs: as many threads as free cores.
    torch.set_num_threads(available_cores())
    logger.info("torch threads in the driver: %d", torch.get_num_threads())
    context, reference = prepare(spec)
    tracker.card = {"language": spec.language, "license": spec.license, "teacher": spec.teacher.label,
                    "teacher_config": dict(context.teacher_config), "latency": dataclasses.asdict(spec.latency),
                    "heldout": dataclasses.asdict(context.plan.heldout)}
    tracker.start(spec_yaml=yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), resume=resume, params={
        "sampler": spec.search.sampler, "num_samples": spec.search.num_samples,
        "max_concurrent": spec.search.max_concurrent, "seed": spec.search.seed, "teacher": context.plan.teacher,
        "objectives": objectives, "ray_address": spec.ray.address, "experiment_dir": str(storage / name),
        "optuna_storage": spec.study_storage,
    })
    if reference:  # the reference just computed, also on --resume (the store's copy is only a fallback)
        tracker.log_teacher(reference)
    book = TrialBook(tracker, objectives, spec.search.num_samples, tracker.read_records() if resume else (),
                     gpus_per_trial=spec.search.resources.gpu, teacher=tracker.teacher)
    book.spent_s, book.gpu_seconds = tracker.spent() if resume else (0.0, 0.0)
    clock = time.time()
    status = "FAILED"
    try:
        candidates = {}
        first = screen_space(spec, context, storage / name, tracker) if spec.search.screen else None
        for outcome in run_tuner(spec, context, name, book, first=first, started=clock):
            _reconcile(book, outcome)
            if outcome.trial_id:
                candidates[outcome.trial_id] = outcome.candidate
        if context.rungs and context.plan.rung_evaluation is not None:
            book.rescore_front(lambda trials: rescore(spec, context, trials), candidates, top=max(context.rungs))
        members = book.finalise()
        tracker.describe(pareto_markdown(members, objectives, reference))
        status = "FINISHED"
    finally:
        tracker.log_spent(book.spent_s + time.time() - clock, book.gpu_seconds, spec.search.time_budget_s)
        tracker.finish(status)
    return SearchResult(name, list(book.records.values()), members, reference, time.time() - started,
                        tracker.experiment_id)


def screen_space(spec: Spec, context: Any, folder: Path, tracker: Any) -> list[dict[str, Any]]:
    """``search.screen``: every candidate within ``max_params`` built to rung 0 and scored with the
    signal (Ray tasks; the ones ``folder``'s screening record holds are not screened again), ranked
    best first (`search.screening.ranked`), logged to the search's run; returns the sampled values of
    the ranked candidates, for the first trials."""
    from pipeline.signals import SIGNALS
    from search.screening import SCREEN_FILE, format_screening, ranked, read_screening, write_screening
    from search.space import size_table
    from search.tuner import screen

    cfg = spec.search.screen
    better = SIGNALS[cfg.signal]
    path = folder / SCREEN_FILE
    done = read_screening(path, cfg.signal)
    todo = [row for row in size_table(spec, context.teacher_config) if not row.violations and label(row.candidate) not in done]
    logger.info("screening %d candidates by %s (%d screened before)", len(todo), cfg.signal, len(done))
    params = {label(row.candidate): row.params for row in todo}
    total = len(done) + len(todo)
    for candidate, result, error in screen(spec, context, [row.candidate for row in todo]):
        name = label(candidate)
        record = {"label": name, "params": params[name], "values": _sampled(spec, candidate)}
        if error is not None:
            logger.warning("screening %s failed; it comes last: %s", name, last_line(error))
            record.update(value=None, error=last_line(error))
        else:
            record.update(value=result["value"], parts=result["parts"], params=result["params"],
                          build_cpu_s=result["build_cpu_s"], signal_cpu_s=result["signal_cpu_s"])
            logger.info("screened %s: %s %.4f (%d of %d)", name, cfg.signal, result["value"], len(done) + 1, total)
        done[name] = record
        write_screening(path, cfg.signal, better, done.values())  # kept as it goes; ranked once at the end
    order = ranked(done.values(), better)
    write_screening(path, cfg.signal, better, order)
    logger.info("%s", format_screening(order, cfg.signal))
    tracker.log_screening(str(path))
    return [record["values"] for record in order]


def _sampled(spec: Spec, candidate: Candidate) -> dict[str, Any]:
    """The sampler's values of ``candidate``: the full vocabulary as the spec spells it (``full``, or a
    size at least the teacher's, which `search.space.candidates` turned into the full one)."""
    from search.space import to_params

    values = to_params(candidate)
    if values["vocab"] == "full" and "full" not in spec.space.vocab:
        values["vocab"] = max(v for v in spec.space.vocab if v != "full")
    return values


# ---------------------------------------------------------------------------- finding a search to resume
SEARCH_RECORD = "lrl-search.json"


def record_search(folder: Path, spec: Spec, spec_file: str | None, overrides: Sequence[str]) -> None:
    """Keep the spec a search started with, its file and its ``--set``, beside Ray's state (once)."""
    record = folder / SEARCH_RECORD
    if record.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    data = {"spec_file": str(Path(spec_file).resolve()) if spec_file else None, "overrides": list(overrides),
            "spec_hash": spec_hash(spec), "spec": spec.model_dump(mode="json"), "started": time.time()}
    tmp = folder / f".{SEARCH_RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, record)


def resume_spec(spec: Spec, spec_file: str, overrides: Sequence[str] = ()) -> Spec:
    """The spec to resume with: ``spec`` when a search of it exists; else the stored spec of the last
    search started from the same file, when they differ only in fields that search's ``--set`` changed.

    A ``--resume`` without the original ``--set`` thus finds its search. When nothing of this file
    was stored, ``spec`` comes back and a new search starts, as before.

    Raises:
        SpecError: one line naming every field in which the last search of this file differs.
    """
    from search.spec import SpecError

    storage = Path(spec.search.storage_path)
    base = f"{slug(spec.mlflow.experiment)}-{spec_hash(spec)}"
    if (storage / base).exists():
        return spec
    found = _last_record(storage, Path(spec_file).resolve())
    if found is None:
        logger.info("no stored search of %s to resume: a new search starts", spec_file)
        return spec
    folder, record = found
    stored = Spec.model_validate(record["spec"])
    differences = _differences(record["spec"], spec.model_dump(mode="json"))
    set_then = [item.partition("=")[0].strip() for item in record["overrides"]]
    if differences and all(any(_covers(key, field) for key in set_then) for field, _, _ in differences) \
            and spec_hash(stored) == record["spec_hash"]:
        logger.warning("resuming %s with the spec it started with: it differs from %s only in what its --set "
                       "changed (%s)", folder.name, spec_file, ", ".join(record["overrides"]))
        return stored.model_copy(update={"ray": spec.ray})
    shown = ", ".join(f"{field} ({_short(then)} then, {_short(now)} now)" for field, then, now in differences)
    hint = (f"resume with its --set ({' '.join('--set ' + item for item in record['overrides'])})"
            if record["overrides"] else "change the spec back")
    raise SpecError([f"{spec_file}: --resume: the last search of this spec file ({folder.name}) was started "
                     f"with a different spec: {shown}; {hint}, or leave out --resume to start a new search"])


def _last_record(storage: Path, spec_file: Path) -> tuple[Path, dict[str, Any]] | None:
    found = []
    for record in storage.glob(f"*/{SEARCH_RECORD}") if storage.is_dir() else ():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if data.get("spec_file") == str(spec_file):
            found.append((data.get("started", 0), record.parent, data))
    if not found:
        return None
    _, folder, data = max(found, key=lambda item: item[0])
    return folder, data


def _differences(then: Any, now: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted field, value then, value now)`` for every leaf that differs, ``ray`` left out."""
    if isinstance(then, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(then) | set(now)):
            if not path and key == "ray":
                continue
            out += _differences(then.get(key), now.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if then == now else [(path, then, now)]


def _covers(key: str, field: str) -> bool:
    return field == key or field.startswith(key + ".") or key.startswith(field + ".")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _reconcile(book: TrialBook, outcome: Any) -> None:
    """Record a trial the callbacks missed (a driver killed between Tune's checkpoint and MLflow,
    or Ray Client, where callbacks run on the head node)."""
    if not outcome.trial_id or book.logged(outcome.trial_id):
        return
    if outcome.error is not None:
        book.failed(outcome.trial_id, outcome.candidate, outcome.error)
    elif "result_json" in outcome.metrics:
        book.finished(outcome.trial_id, outcome.candidate, outcome.metrics)


def _pareto_rows(members: list[dict[str, Any]], objectives, reference: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the Pareto table: one row per student (best first objective first), then the teacher."""
    metrics = []  # each objective; a score (dev, what the front is chosen on) is followed by its test score
    for metric, _ in objectives:
        metrics += [metric] if metric in MODEL_METRICS else [metric, f"test_{metric}"]
    extra = [m for m in ("params", "quality", "test_quality", "disk_mb", "latency_ms", "drop_quality_rel")
             if m not in metrics]
    columns = ["trial", "layers", "ffn", "hidden", "vocab", "init", *metrics, *extra]
    rows = []
    groups: dict[tuple, list[dict[str, Any]]] = {}  # the sampler may draw a candidate more than once
    for r in members:
        p = r["params"]
        key = tuple("full" if p.get(k) in (None, "None") else p.get(k)
                    for k in ("num_hidden_layers", "intermediate_size", "hidden_size", "vocab_size", "init"))
        groups.setdefault(key, []).append(r)
    for key, same in groups.items():
        r = same[0]
        trial = r["id"] + (f" (+{len(same) - 1} same)" if len(same) > 1 else "")
        values = [trial, *key]
        for m in metrics + extra:
            v = r["metrics"].get(m)
            values.append("-" if v is None else (f"{int(v):,}" if m == "params" else f"{v:.4g}"))
        rows.append([str(v) for v in values])
    if reference:
        rows.append(["teacher", "", "", "", "", ""] + [
            "-" if reference.get(m) is None else (f"{int(reference[m]):,}" if m == "params" else f"{reference[m]:.4g}")
            for m in metrics + extra])
    return columns, rows


_TABLE_NOTE = "(quality and task columns: dev scores, on which the front is chosen; test_*: test scores, reported only)"


def pareto_table(members: list[dict[str, Any]], objectives, reference: dict[str, Any]) -> str:
    """The Pareto front as a text table (one row per student, best first objective first)."""
    columns, rows = _pareto_rows(members, objectives, reference)
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["Pareto front:", "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    lines.append(_TABLE_NOTE)
    return "\n".join(lines)


def pareto_markdown(members: list[dict[str, Any]], objectives, reference: dict[str, Any]) -> str:
    """The Pareto front as a Markdown table, for the search's parent run description in the MLflow UI."""
    columns, rows = _pareto_rows(members, objectives, reference)
    objective_text = ", ".join(f"{metric} ({direction})" for metric, direction in objectives)
    lines = [f"## Pareto front: {len(members)} students", "", f"Objectives: {objective_text}.", "",
             "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", _TABLE_NOTE[1:-1] + ".", "Registered as `best-<objective>` and `pareto-<k>` aliases; "
              "`python -m search.export --alias pareto-1 --out DIR --int8` exports one."]
    return "\n".join(lines)
