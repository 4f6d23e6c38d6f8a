"""The search driver: Ray Tune + Optuna (multi-objective) over the pipeline, tracked in MLflow.

``run_search(spec, args)`` prepares the teacher and its reference scores once, runs a Tuner whose
searcher is ``OptunaSearch`` (several objectives, seeded NSGA-II or TPE sampler, study in SQLite beside
the MLflow store) behind a ``ConcurrencyLimiter``, and logs every finished or failed trial from a
driver-side Tune callback through the single `search.tracking.Tracker` (one SQLite writer). After
each trial and at the end the Pareto front is recomputed and re-tagged. ``--resume`` restores the Tune
experiment (searcher state included) and the tracker skips trials it already logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

# Stack notes: importing torch for the first time after ray.init() crashed with an MKL error in
# Ray jobs; import it before anything starts Ray.
import torch  # noqa: F401
from ray.tune import Callback

from search.trainable import (
    TRIAL_FN_ENV, DistinctSampler, TrialContext, build_context, cache_dir_of, candidate_from_config, candidate_label,
    constraints_func, objectives_of, resolve_sources, resolve_teacher, search_space, trainable,
)

__all__ = ["TrackingCallback", "run_search", "prepare", "spec_hash", "search_paths"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
_TRACKERS: dict[str, Any] = {}  # callback key -> Tracker; callbacks are pickled into the experiment


# ---------------------------------------------------------------------------- identity and paths
def _spec_data(spec: Any) -> dict[str, Any]:
    data = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
    return data


def spec_hash(spec: Any) -> str:
    """Short sha256 of the spec, without ``ray`` (where it runs does not change what it searches)."""
    data = {k: v for k, v in _spec_data(spec).items() if k != "ray"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "search"


def search_paths(spec: Any) -> dict[str, Any]:
    """Absolute locations: Ray storage, MLflow tracking URI, Optuna storage URL, cache."""
    from search.tracking import default_tracking_uri

    tracking_uri = spec.mlflow.tracking_uri or default_tracking_uri()
    storage = getattr(spec.search, "storage_path", None)
    if storage and "://" in storage:
        from pipeline.errors import UsageError

        raise UsageError(f"search.storage_path: {storage}: remote storage URIs are not supported yet; "
                         "use a folder every node sees (a shared filesystem)")
    storage_path = Path(storage).expanduser().resolve() if storage else (REPO / ".cache" / "ray")
    if tracking_uri.startswith("sqlite:///"):
        optuna_db = Path(tracking_uri[len("sqlite:///"):]).parent / "optuna.db"
    else:
        optuna_db = storage_path / "optuna.db"
    return {"tracking_uri": tracking_uri, "storage_path": storage_path,
            "optuna_url": f"sqlite:///{optuna_db}", "cache_dir": cache_dir_of(spec)}


def experiment_name(spec: Any, storage_path: Path, resume: bool) -> str:
    """``<experiment>-<hash>`` for the first search of a spec, ``...-2``, ``...-3`` for later fresh
    ones; ``resume`` picks the latest that exists."""
    base = f"{_slug(spec.mlflow.experiment)}-{spec_hash(spec)}"
    names = [base] + [f"{base}-{i}" for i in range(2, 1000)]
    existing = [n for n in names if (storage_path / n).exists()]
    if resume:
        return existing[-1] if existing else base
    return next(n for n in names if not (storage_path / n).exists())


# ---------------------------------------------------------------------------- teacher
def _teacher_config(spec: Any, teacher_dir: str) -> dict[str, Any]:
    config = Path(teacher_dir) / "config.json"
    if config.is_file():
        return json.loads(config.read_text())
    from search.spec import resolve_teacher_config

    return dict(resolve_teacher_config(spec))


def prepare(spec: Any) -> tuple[TrialContext, dict[str, Any]]:
    """Prepare the teacher once (build/adapt, cached) and its reference scores.

    With the testing hook ``LRL_TRIAL_FN`` set, the teacher is used as given and no reference is
    computed (fake trials do not need them).

    Returns:
        The TrialContext for the trials and the teacher's reference (``quality``, task ``scores``,
        ``params``).
    """
    from pipeline.sizes import config_parameters

    cache_dir = cache_dir_of(spec)
    teacher = resolve_teacher(spec, cache_dir)
    reference: dict[str, Any] = {}
    if not os.environ.get(TRIAL_FN_ENV):
        from pipeline.trial import prepare_teacher, teacher_reference

        corpus, heldout, tasks = resolve_sources(spec, cache_dir)
        logger.info("preparing the teacher %s", teacher)
        started = time.time()
        # device None: the pipeline takes CUDA where the driver's node has it (a head node may not).
        teacher = prepare_teacher(teacher, spec.teacher.adapt, corpus, heldout, str(cache_dir))
        logger.info("teacher ready in %.0f s: %s; evaluating it on %s", time.time() - started, teacher,
                    ", ".join(tasks) or "no tasks")
        if tasks:
            reference = _flat(teacher_reference(teacher, tasks, spec.evaluation, str(cache_dir)))
    teacher_config = _teacher_config(spec, teacher)
    reference["params"] = config_parameters(teacher_config)
    return build_context(spec, teacher, teacher_config), reference


def _flat(reference: dict[str, Any]) -> dict[str, Any]:
    """Numbers of the teacher reference at the top level: ``quality``, one score per task, ..."""
    flat = {k: v for k, v in reference.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    flat.update({k: v for k, v in (reference.get("scores") or {}).items() if isinstance(v, (int, float))})
    return flat


# ---------------------------------------------------------------------------- Ray
def _ray_init(address: str) -> None:
    import ray

    if ray.is_initialized():
        return
    if address in ("local", "", None):
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
    elif address.startswith(("http://", "https://")):
        # A job-submission address: inside `ray job submit` the driver attaches with "auto".
        ray.init(address="auto")
    else:
        ray.init(address=address)


class TrackingCallback(Callback):
    """Logs each finished or failed trial to MLflow and re-tags the Pareto front (driver side).

    Tune pickles its callbacks into the experiment folder; this class is importable, so a restored
    experiment gets it by reference and looks its Tracker up by ``key`` in this process.
    With Ray Client (``ray://``) Tune runs on the head node, where no Tracker exists: trials are
    then logged when the search ends (`_reconcile`).
    """

    def __init__(self, key: str, num_samples: int, max_failures: int) -> None:
        self.key = key
        self.num_samples = num_samples
        self.max_failures = max_failures

    def on_trial_start(self, iteration, trials, trial, **info):
        logger.info("trial %s %s started", trial.trial_id, _label(trial.config))

    def on_trial_complete(self, iteration, trials, trial, **info):
        _safe(self._complete, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        _safe(self._error, trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        logger.warning("trial %s %s failed (attempt %d of %d), retrying: %s", trial.trial_id,
                       _label(trial.config), trial.num_failures, self.max_failures + 1,
                       _last_line(_error_text(trial)))

    def _complete(self, trial) -> None:
        result = trial.last_result or {}
        tracker = _TRACKERS.get(self.key)
        if tracker is None:
            logger.info("trial %s %s finished: %s", trial.trial_id, _label(trial.config), result.get("quality"))
            return
        run_id = _log_result(tracker, trial.trial_id, trial.config, result)
        members = tracker.mark_pareto()
        logger.info("trial %d/%d %s %s: %s%s; Pareto front: %d", len(tracker.trial_runs()), self.num_samples,
                    trial.trial_id, _label(trial.config), _summary(result, tracker.objectives),
                    "" if run_id else " (already logged)", len(members))

    def _error(self, trial) -> None:
        error = _error_text(trial)
        logger.error("trial %s %s failed after %d attempts: %s", trial.trial_id, _label(trial.config),
                     trial.num_failures, _last_line(error))
        tracker = _TRACKERS.get(self.key)
        if tracker is not None:
            tracker.log_failure(trial.trial_id, _params(trial.config), error,
                                name=f"{trial.trial_id} {_label(trial.config)}", attempts=trial.num_failures)
            tracker.mark_pareto()


def _safe(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # tracking must not kill the search; the end-of-search reconcile retries
        logger.exception("MLflow logging failed; it is retried when the search ends")


def _params(config: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(candidate_from_config(config))


def _label(config: dict[str, Any]) -> str:
    try:
        return candidate_label(candidate_from_config(config))
    except (KeyError, TypeError, ValueError):
        return str(config)


def _error_text(trial) -> str:
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return str(trial.get_error() or "unknown error")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def _summary(result: dict[str, Any], objectives) -> str:
    parts = [f"{m}={result[m]:.4g}" for m, _ in objectives if isinstance(result.get(m), (int, float))]
    if not result.get("feasible", 1):
        parts.append("infeasible")
    return " ".join(parts)


def _log_result(tracker, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> str | None:
    full = json.loads(result.get("result_json") or "{}")
    return tracker.log_trial(trial_id, _params(config), full, name=f"{trial_id} {_label(config)}",
                             feasible=bool(result.get("feasible", 1)))


def _reconcile(tracker, grid) -> None:
    """Log trials the callback missed (a driver killed between Tune's checkpoint and MLflow)."""
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if not trial_id:
            continue
        status = tracker.logged(trial_id)
        if result.error is not None and status is None:
            tracker.log_failure(trial_id, _params(result.config), str(result.error),
                                name=f"{trial_id} {_label(result.config)}")
        elif result.error is None and result.metrics and "result_json" in result.metrics and status != "FINISHED":
            _log_result(tracker, trial_id, result.config, result.metrics)


# ---------------------------------------------------------------------------- the search
def _sampler(spec: Any, context: TrialContext):
    import optuna

    kind = str(spec.search.sampler).lower()
    seed = spec.search.seed
    constraints = constraints_func(context)
    if kind == "tpe":
        inner = optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    else:
        population = max(2, min(50, int(spec.search.num_samples) // 2))
        inner = optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints, population_size=population)
    return DistinctSampler(inner, search_space(spec.space), seed=seed)


def _tuner(spec: Any, context: TrialContext, name: str, storage_path: Path, optuna_url: str, callback):
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    resources = {"cpu": float(spec.search.resources.cpu), "gpu": float(spec.search.resources.gpu or 0)}
    fn = tune.with_resources(tune.with_parameters(trainable, context=context), resources)
    path = storage_path / name
    if path.exists() and tune.Tuner.can_restore(str(path)):
        logger.info("restoring the Tune experiment %s", path)
        return tune.Tuner.restore(str(path), trainable=fn, resume_errored=True)
    metrics, modes = zip(*context.objectives)
    searcher = OptunaSearch(
        space=search_space(spec.space), metric=list(metrics), mode=list(modes), sampler=_sampler(spec, context),
        storage=optuna.storages.RDBStorage(optuna_url), study_name=name,
    )
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=int(spec.search.max_concurrent)),
            num_samples=int(spec.search.num_samples), reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage_path), callbacks=[callback], verbose=0,
            failure_config=tune.FailureConfig(max_failures=int(spec.search.max_failures)),
        ),
    )


def _preload() -> None:
    """Import now what the callback needs later (the driver's code folder may vanish in a Ray job)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import ray.tune.search.optuna  # noqa: F401


def _spec_yaml(spec: Any) -> str:
    import yaml

    return yaml.safe_dump(_spec_data(spec), sort_keys=False)


def run_search(spec: Any, args: Any) -> int:
    """Run (or with ``args.resume`` continue) the search described by ``spec``.

    Args:
        spec: a validated `search.spec.Spec`.
        args: the CLI namespace; reads ``resume`` (bool) and ``address`` (None: ``spec.ray.address``).

    Returns:
        0 when at least one trial finished, 1 otherwise.
    """
    from search.tracking import Tracker, ui_command

    # Model-loading progress bars of every trial would drown the one-line-per-trial log (Ray's
    # local workers inherit this environment).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    resume = bool(getattr(args, "resume", False))
    address = getattr(args, "address", None) or spec.ray.address
    paths = search_paths(spec)
    name = experiment_name(spec, paths["storage_path"], resume)
    objectives = objectives_of(spec)
    started = time.time()
    logger.info("search %s: %d trials, %d at a time, objectives %s", name, spec.search.num_samples,
                spec.search.max_concurrent, ", ".join(f"{m} {d}" for m, d in objectives))

    context, reference = prepare(spec)
    tracker = Tracker(paths["tracking_uri"], spec.mlflow.experiment, search=name, spec_hash=spec_hash(spec),
                      objectives=objectives, registered_model=f"{_slug(spec.mlflow.experiment)}-student",
                      artifact_location=getattr(spec.mlflow, "artifact_location", None))
    tracker.start(spec_yaml=_spec_yaml(spec), resume=resume, params={
        "sampler": spec.search.sampler, "num_samples": spec.search.num_samples,
        "max_concurrent": spec.search.max_concurrent, "seed": spec.search.seed,
        "teacher": context.plan["teacher"], "objectives": objectives, "ray_address": address,
        "experiment_dir": str(paths["storage_path"] / name), "optuna_storage": paths["optuna_url"],
    })
    if reference and (not resume or not tracker.teacher):
        tracker.log_teacher(reference)
    _TRACKERS[name] = tracker

    _ray_init(address)
    _preload()
    # Every path is absolute by now. Inside a Ray job the working directory is the job's unpacked
    # package, which the cluster may garbage-collect while the driver still runs (seen with two
    # nodes on one machine): work from the storage folder instead.
    paths["storage_path"].mkdir(parents=True, exist_ok=True)
    try:
        previous_cwd: str | None = os.getcwd()
    except FileNotFoundError:
        previous_cwd = None
    os.chdir(paths["storage_path"])
    status = "FAILED"
    try:
        callback = TrackingCallback(name, int(spec.search.num_samples), int(spec.search.max_failures))
        tuner = _tuner(spec, context, name, paths["storage_path"], paths["optuna_url"], callback)
        grid = tuner.fit()
        _reconcile(tracker, grid)
        members = tracker.mark_pareto()
        status = "FINISHED"
    finally:
        tracker.finish(status)
        _TRACKERS.pop(name, None)
        try:
            if previous_cwd:
                os.chdir(previous_cwd)
        except OSError:
            pass
    records = tracker.records()
    finished = sum(not r["failed"] for r in records)
    print(pareto_table(members, objectives, reference))
    print(f"\n{finished} trials finished, {len(records) - finished} failed, "
          f"{len(members)} on the Pareto front, {time.time() - started:.0f} s.")
    print(f"Optuna study: {name} in {paths['optuna_url']}")
    print(f"Open the MLflow UI:\n  {ui_command(paths['tracking_uri'])}")
    return 0 if finished else 1


def pareto_table(members: list[dict[str, Any]], objectives, reference: dict[str, Any]) -> str:
    """The Pareto front as a text table (one row per student, best first objective first)."""
    metrics = [m for m, _ in objectives]
    extra = [m for m in ("params", "quality", "disk_mb", "drop_quality_rel") if m not in metrics]
    columns = ["trial", "layers", "ffn", "hidden", "vocab", "init", *metrics, *extra]
    rows = []
    groups: dict[tuple, list[dict[str, Any]]] = {}  # the sampler may draw a candidate more than once
    for r in members:
        p = r["params"]
        key = tuple(p.get(k) for k in ("num_hidden_layers", "intermediate_size", "hidden_size", "vocab_size", "init"))
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
        ref = ["teacher", "", "", "", "", ""] + [
            "-" if reference.get(m) is None else (f"{int(reference[m]):,}" if m == "params" else f"{reference[m]:.4g}")
            for m in metrics + extra]
        rows.append(ref)
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["Pareto front:", "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
