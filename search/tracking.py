"""MLflow sink of the search: the only module that imports mlflow.

One `Tracker` lives in the driver process and does every write (SQLite allows one writer; trials on
workers never touch MLflow). Layout of a search in the store:

- one parent run per search (tags ``lrl.role=search``, ``lrl.search``, ``lrl.spec_hash``,
  ``lrl.git_commit``; the spec YAML as artifact ``spec.yaml``; teacher reference scores as metrics
  ``teacher_<metric>``; the Pareto-front plot ``pareto_front.png``);
- one nested child run per trial (tags ``mlflow.parentRunId``, ``lrl.trial_id``, ``pareto``,
  ``feasible``; params = the candidate; metrics = objectives, per-task scores, drops against the
  teacher, stage timings; the student's Hugging Face directory as artifact ``model``). A trial that
  failed for good is a run with status FAILED, its error in the tag ``error`` and ``error.txt``.

Resume: the parent is found again by its tags and every trial run by ``lrl.trial_id``; a trial whose
run is FINISHED is never logged again, and a half-written run (driver killed while logging) is
completed in place, so each trial has exactly one run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from search.pareto import Objective, pareto_front  # noqa: E402

__all__ = ["Tracker", "default_tracking_uri", "ui_command", "git_commit"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
_TAG_LIMIT = 5000


def default_tracking_uri() -> str:
    """``sqlite:///<repo>/mlflow/mlflow.db``: the store the UI command in mlflow/README.md opens."""
    return f"sqlite:///{REPO / 'mlflow' / 'mlflow.db'}"


def _sqlite_path(tracking_uri: str) -> Path | None:
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):])
    return None


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store."""
    path = _sqlite_path(tracking_uri)
    if path is None:
        return f"open {tracking_uri} in a browser"
    artifacts = path.parent / "artifacts"
    return (
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 "
        f"--backend-store-uri {tracking_uri} --default-artifact-root {artifacts.as_uri()} "
        "--host 127.0.0.1 --port 5000"
    )


def git_commit(repo: Path = REPO) -> str:
    """The checkout's commit, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_metrics(result: Mapping[str, Any], teacher: Mapping[str, float] | None) -> dict[str, float]:
    """Flat MLflow metrics of a `pipeline.trial.run_trial` result.

    ``params``, ``disk_mb``, ``quality``, ``latency_ms``, one score per task (named by the task),
    ``drop_<metric>`` (teacher minus student) and ``drop_<metric>_rel`` (that over the teacher's
    score) for quality and every task, ``time_<stage>`` seconds.
    """
    metrics: dict[str, float] = {}
    for key in ("params", "disk_mb", "quality", "latency_ms"):
        if _finite(result.get(key)):
            metrics[key] = float(result[key])
    for task, score in (result.get("scores") or {}).items():
        if _finite(score):
            metrics[task] = float(score)
    for stage, seconds in (result.get("timings") or {}).items():
        if _finite(seconds):
            metrics[f"time_{stage}"] = float(seconds)
    for key, reference in (teacher or {}).items():
        if key in metrics and _finite(reference) and key not in ("params", "disk_mb", "latency_ms"):
            metrics[f"drop_{key}"] = reference - metrics[key]
            if reference:
                metrics[f"drop_{key}_rel"] = (reference - metrics[key]) / reference
    if teacher and _finite(teacher.get("params")) and "params" in metrics:
        metrics["compression"] = 1.0 - metrics["params"] / teacher["params"]
    return metrics


def _params(candidate: Mapping[str, Any]) -> dict[str, str]:
    return {k: "full" if v is None else str(v) for k, v in candidate.items()}


class Tracker:
    """Writes one search to MLflow. Use from the driver process only.

    Args:
        tracking_uri: ``sqlite:///...`` (artifacts go to ``artifacts/`` beside the database) or a
            tracking server address.
        experiment: experiment name; created once, with its artifact location, if missing.
        search: the search's name (one parent run per search name and spec hash).
        spec_hash: hash of the spec, tagged on the parent run.
        objectives: ``[(metric, "min"|"max"), ...]`` for the Pareto front.
        registered_model: model-registry name under which Pareto students are registered.
    """

    def __init__(self, tracking_uri: str, experiment: str, *, search: str, spec_hash: str,
                 objectives: Sequence[Objective], registered_model: str,
                 artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.search = search
        self.spec_hash = spec_hash
        self.objectives = list(objectives)
        self.registered_model = registered_model
        db = _sqlite_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = self._experiment(experiment, db, artifact_location)
        self.parent_id: str | None = None
        self.teacher: dict[str, float] = {}

    def _experiment(self, name: str, db: Path | None, location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        if location is None and db is not None:
            location = (db.parent / "artifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    # ---------------------------------------------------------------- parent run
    def start(self, *, spec_yaml: str, params: Mapping[str, Any], resume: bool,
              parent_run_id: str | None = None) -> str:
        """Open the search's parent run (found again by its tags when ``resume``).

        Args:
            spec_yaml: the spec as YAML text, logged as ``spec.yaml``.
            params: flat params for the parent (sampler, num_samples, ...).
            resume: look for this search's existing parent run first.
            parent_run_id: an enclosing run to nest the search under; default: the caller's active
                MLflow run (``mlflow.active_run()`` or ``MLFLOW_RUN_ID``), if any.
        Returns:
            The parent run id.
        """
        if resume:
            existing = self._find_parent()
            if existing is not None:
                self.parent_id = existing
                self.client.update_run(existing, status="RUNNING")
                self.teacher = self._teacher_from_run(existing)
                logger.info("resuming MLflow parent run %s", existing)
                return existing
        enclosing = parent_run_id or _enclosing_run_id()
        tags = {"lrl.role": "search", "lrl.search": self.search, "lrl.spec_hash": self.spec_hash,
                "lrl.git_commit": git_commit(), "mlflow.runName": self.search}
        if enclosing:
            tags["mlflow.parentRunId"] = enclosing
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.search)
        self.parent_id = run.info.run_id
        flat = {"spec_hash": self.spec_hash, **{k: v for k, v in params.items()}}
        self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
        self.client.log_text(self.parent_id, spec_yaml, "spec.yaml")
        return self.parent_id

    def _find_parent(self) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(f"tags.`lrl.role` = 'search' and tags.`lrl.search` = '{self.search}' "
                           f"and tags.`lrl.spec_hash` = '{self.spec_hash}'"),
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def _teacher_from_run(self, run_id: str) -> dict[str, float]:
        metrics = self.client.get_run(run_id).data.metrics
        return {k[len("teacher_"):]: v for k, v in metrics.items() if k.startswith("teacher_")}

    def log_teacher(self, reference: Mapping[str, Any]) -> None:
        """Teacher reference (``quality``, task scores, ``params``, ...) as ``teacher_*`` metrics."""
        self.teacher = {k: float(v) for k, v in _flat_reference(reference).items()}
        self.client.log_batch(self._parent(), metrics=[
            Metric(f"teacher_{k}", v, _now(), 0) for k, v in self.teacher.items()])

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status)

    def _parent(self) -> str:
        if self.parent_id is None:
            raise RuntimeError("Tracker.start() must be called before logging trials")
        return self.parent_id

    # ---------------------------------------------------------------- trial runs
    def trial_runs(self) -> dict[str, Any]:
        """``{trial_id: Run}`` of this search's trial runs."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self._parent()}'",
            max_results=50_000,
        )
        return {r.data.tags["lrl.trial_id"]: r for r in runs if "lrl.trial_id" in r.data.tags}

    def logged(self, trial_id: str) -> str | None:
        """The status (``FINISHED``, ``FAILED``, ``RUNNING``) of the trial's run, or None."""
        run = self.trial_runs().get(trial_id)
        return run.info.status if run else None

    def _open_trial_run(self, trial_id: str, name: str, candidate: Mapping[str, Any]) -> str | None:
        existing = self.trial_runs().get(trial_id)
        if existing is not None:
            if existing.info.status == "FINISHED":
                return None
            self.client.update_run(existing.info.run_id, status="RUNNING")
            return existing.info.run_id
        tags = {"mlflow.parentRunId": self._parent(), "lrl.trial_id": trial_id,
                "lrl.search": self.search, "mlflow.runName": name}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in _params(candidate).items()])
        return run.info.run_id

    def log_trial(self, trial_id: str, candidate: Mapping[str, Any], result: Mapping[str, Any], *,
                  name: str | None = None, feasible: bool = True) -> str | None:
        """Log one finished trial; returns its run id, or None when it was already logged.

        Args:
            trial_id: stable id of the trial (Ray's trial id), the resume key.
            candidate: the sampled values (logged as params).
            result: `pipeline.trial.run_trial`'s dict; ``model_dir`` is logged as artifact ``model``.
            feasible: False for a candidate that breaks a constraint (kept off the Pareto front).
        """
        run_id = self._open_trial_run(trial_id, name or f"trial-{trial_id}", candidate)
        if run_id is None:
            logger.info("trial %s already logged, skipping", trial_id)
            return None
        now = _now()
        metrics = trial_metrics(result, self.teacher)
        tags = {"feasible": str(feasible).lower(), "pareto": "false"}
        for key, value in (result.get("config") or {}).items():
            tags[f"student.{key}"] = str(value)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_text(run_id, json.dumps(_jsonable(result), indent=2, sort_keys=True), "trial.json")
        model_dir = result.get("model_dir")
        if model_dir and Path(model_dir).is_dir():
            self.client.log_artifacts(run_id, str(model_dir), "model")
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def log_failure(self, trial_id: str, candidate: Mapping[str, Any], error: str, *,
                    name: str | None = None, attempts: int | None = None) -> str | None:
        """Record a trial that failed for good as a FAILED run with its error."""
        run_id = self._open_trial_run(trial_id, name or f"trial-{trial_id}", candidate)
        if run_id is None:
            return None
        first_line = next((line for line in reversed(error.strip().splitlines()) if line.strip()), error)
        tags = [RunTag("error", first_line[:_TAG_LIMIT]), RunTag("pareto", "false"),
                RunTag("feasible", "true")]
        if attempts is not None:
            tags.append(RunTag("attempts", str(attempts)))
        self.client.log_batch(run_id, tags=tags)
        self.client.log_text(run_id, error, "error.txt")
        self.client.set_terminated(run_id, "FAILED")
        return run_id

    # ---------------------------------------------------------------- Pareto front
    def records(self) -> list[dict[str, Any]]:
        """Plain records of every trial run, for `search.pareto.pareto_front`."""
        out = []
        for trial_id, run in self.trial_runs().items():
            out.append({
                "id": trial_id, "run_id": run.info.run_id, "metrics": dict(run.data.metrics),
                "params": dict(run.data.params), "failed": run.info.status != "FINISHED",
                "feasible": run.data.tags.get("feasible", "true") != "false",
                "status": run.info.status,
            })
        return out

    def mark_pareto(self) -> list[dict[str, Any]]:
        """Recompute the front, tag every trial run ``pareto=true|false``, register the front's
        students (aliases ``pareto-<k>`` and ``best-<metric>``), plot it on the parent. Idempotent.

        Returns:
            The records on the front, sorted by the first objective (best first).
        """
        records = self.records()
        front = pareto_front(records, self.objectives)
        for record in records:
            self.client.set_tag(record["run_id"], "pareto", str(record["id"] in front).lower())
            record["pareto"] = record["id"] in front
        members = [r for r in records if r["pareto"]]
        metric, direction = self.objectives[0]
        members.sort(key=lambda r: r["metrics"][metric], reverse=direction == "max")
        self._register(members, [r for r in records if not r["pareto"]])
        self._plot(records)
        return members

    def _register(self, members: list[dict[str, Any]], others: list[dict[str, Any]]) -> None:
        if not members and not others:
            return
        name = self.registered_model
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(
                name, description=f"Pareto-optimal students of the search {self.search}")
        versions = {v.run_id: v for v in self.client.search_model_versions(f"name = '{name}'")}
        aliases: dict[str, str] = {}
        for k, record in enumerate(members, start=1):
            run_id = record["run_id"]
            if run_id not in versions:
                run = self.client.get_run(run_id)
                if "model" not in {f.path for f in self.client.list_artifacts(run_id)}:
                    continue
                versions[run_id] = self.client.create_model_version(
                    name, source=f"{run.info.artifact_uri}/model", run_id=run_id,
                    tags={"lrl.trial_id": record["id"], "lrl.search": self.search},
                    await_creation_for=0,
                )
            version = versions[run_id].version
            self.client.set_model_version_tag(name, version, "pareto", "true")
            aliases[f"pareto-{k}"] = version
        for metric, direction in self.objectives:
            registered = [r for r in members if r["run_id"] in versions]
            if registered:
                pick = (max if direction == "max" else min)(registered, key=lambda r: r["metrics"][metric])
                aliases[f"best-{_alias_part(metric)}"] = versions[pick["run_id"]].version
        for record in others:
            if record["run_id"] in versions:
                self.client.set_model_version_tag(name, versions[record["run_id"]].version, "pareto", "false")
        current = self.client.get_registered_model(name).aliases or {}
        for alias in current:
            if alias.startswith("pareto-") and alias not in aliases:
                self.client.delete_registered_model_alias(name, alias)
        for alias, version in aliases.items():
            if current.get(alias) != version:
                self.client.set_registered_model_alias(name, alias, version)

    def _plot(self, records: list[dict[str, Any]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not records:
            return
        (y_metric, y_dir), (x_metric, x_dir) = (self.objectives + [("params", "min")])[:2]
        if x_metric == y_metric:
            x_metric, x_dir = ("quality", "max") if y_metric != "quality" else ("params", "min")
        points = [r for r in records if not r["failed"] and x_metric in r["metrics"] and y_metric in r["metrics"]]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for on_front, style in ((False, dict(c="tab:gray", alpha=0.6, label="trial")),
                                (True, dict(c="tab:red", label="Pareto front"))):
            chosen = [r for r in points if r.get("pareto") == on_front]
            ax.scatter([r["metrics"][x_metric] for r in chosen], [r["metrics"][y_metric] for r in chosen], **style)
        front = sorted((r for r in points if r.get("pareto")), key=lambda r: r["metrics"][x_metric])
        if front:
            ax.plot([r["metrics"][x_metric] for r in front], [r["metrics"][y_metric] for r in front],
                    c="tab:red", lw=1, drawstyle="steps-post" if x_dir != y_dir else "default")
        if x_metric in self.teacher and y_metric in self.teacher:
            ax.scatter([self.teacher[x_metric]], [self.teacher[y_metric]], marker="*", s=150,
                       c="tab:blue", label="teacher")
        ax.set_xlabel(f"{x_metric} ({x_dir})")
        ax.set_ylabel(f"{y_metric} ({y_dir})")
        ax.set_title(f"{self.search}: {len(front)} Pareto / {len(points)} finished")
        ax.legend(loc="best")
        fig.tight_layout()
        self.client.log_figure(self._parent(), fig, "pareto_front.png")
        plt.close(fig)


def _alias_part(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", metric)


def _flat_reference(reference: Mapping[str, Any]) -> dict[str, float]:
    """Teacher reference -> {metric: value}: ``quality``, task scores, ``params``, ``disk_mb``."""
    flat = {k: v for k, v in reference.items() if _finite(v)}
    for task, score in (reference.get("scores") or {}).items():
        if _finite(score):
            flat[task] = score
    return flat


def _enclosing_run_id() -> str | None:
    active = mlflow.active_run()
    if active is not None:
        return active.info.run_id
    return os.environ.get("MLFLOW_RUN_ID") or None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _now() -> int:
    return int(time.time() * 1000)
