"""MLflow as the search's sink: the only module that imports mlflow.

One `Tracker` lives in the driver process and does every write (SQLite allows one writer; trials on
workers never touch MLflow). It is written to, not queried for decisions: the driver keeps the trial
records and the Pareto front (`search.driver`), and tells the tracker what changed, so the writes per
trial stay constant however long the search runs. Only a resume reads the store, once. Layout of a
search in the store:

- one parent run per search (tags ``lrl.role=search``, ``lrl.search``, ``lrl.spec_hash``,
  ``lrl.git_commit``; the spec YAML as artifact ``spec.yaml``; teacher reference scores as metrics
  ``teacher_<metric>``; the Pareto-front plot ``pareto_front.png``);
- one nested child run per trial (tags ``mlflow.parentRunId``, ``lrl.trial_id``, ``pareto``,
  ``feasible``; params = the candidate; metrics = objectives, per-task scores, drops against the
  teacher, stage timings, latency; the student's Hugging Face directory as artifact ``model`` with its
  model card ``model/README.md`` (`pipeline.card`) and the card's data ``model/card.json``; and the same
  student as an MLflow model of the transformers flavour (``fill-mask``, tag ``lrl.model_id``), which
  the registry's versions point at). With multi-fidelity also the tags ``rung`` (the highest reached),
  ``lrl.rungs`` (objectives at each rung, also each metric's history by step) and ``rescored`` (a
  front member scored again in full after stopping below the top rung, `Tracker.log_rescored`). A
  trial that failed for good is a run with status FAILED, its error in the tag ``error`` and ``error.txt``;
- the experiment is tagged as custom model development (``mlflow.experimentKind``, the UI's "Machine
  learning" type); MLflow 3.17's UI still opens an experiment on its GenAI overview unless the URL asks
  for ``?workflowType=machine_learning``, the link `ui_command` prints; the parent run's description
  (``mlflow.note.content``) is the Pareto table when the search ends (`Tracker.describe`).

Resume: the parent is found again by its tags and `Tracker.read_records` returns one record per trial
run (``lrl.trial_id``); the driver never logs a FINISHED trial again and completes a half-written run
(driver killed while logging) in place, so each trial has exactly one run.

Registry: a student is registered (a version of ``mlflow.registered_model``, tag ``pareto``) when it
joins the front and keeps its version after it leaves (tag ``pareto=false``); the ``best-<metric>``
aliases follow the front as it changes; the ``pareto-<k>`` aliases (best first objective first) are
renumbered once, when the search ends (`Tracker.register` with ``renumber=True``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
# MLflow's own context manager for "this tracking URI for a block, then the previous one": the flavour
# logger and the registry's resolution of models:/ sources use the global URI, not a client's.
from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # noqa: E402

from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from pipeline.errors import UsageError  # noqa: E402
from search.folders import writable_folder  # noqa: E402
from search.pareto import Objective  # noqa: E402
from search.schema import MODEL_METRICS, REPO_ROOT  # noqa: E402

__all__ = ["Tracker", "check_store", "download_student", "find_student", "git_commit", "ui_command"]

logger = logging.getLogger(__name__)

_TAG_LIMIT = 5000
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # not GenAI: a training experiment
_MODEL_ID_TAG = "lrl.model_id"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
_MLFLOW_CARD = "model_card.md"  # where MLflow's transformers flavour keeps the model card in a logged model


def _sqlite_path(tracking_uri: str) -> Path | None:
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):])
    return None


def ui_command(tracking_uri: str, experiment_id: str | None = None) -> str:
    """The shell command that opens the MLflow UI on this store and, given the experiment, the page of
    its runs (MLflow 3.17's UI opens an experiment on its GenAI overview unless the URL asks for the
    model-training view)."""
    path = _sqlite_path(tracking_uri)
    if path is None:
        command, host = f"open {tracking_uri} in a browser", tracking_uri.rstrip("/")
    else:
        artifacts = path.parent / "artifacts"
        command = (
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 "
            f"--backend-store-uri {tracking_uri} --default-artifact-root {artifacts.as_uri()} "
            "--host 127.0.0.1 --port 5000"
        )
        host = "http://127.0.0.1:5000"
    if experiment_id is None:
        return command
    return f"{command}\n  then open {host}/#/experiments/{experiment_id}?workflowType=machine_learning"


def check_store(tracking_uri: str, artifact_location: str | None = None) -> None:
    """Prove the tracking store usable before anything starts (MLflow itself retries for minutes);
    nothing is created.

    A SQLite store's folder (or the parent that exists) and database file, if any, must be writable, a tracking server must
    accept a connection, and a local artifact folder must be writable.

    Raises:
        UsageError: one line naming ``mlflow.tracking_uri`` or ``mlflow.artifact_location``.
    """
    db = _sqlite_path(tracking_uri)
    if db is not None:
        writable_folder(db.parent, "mlflow.tracking_uri", create=False)
        if db.exists():
            try:
                with db.open("r+b"):
                    pass
            except OSError as error:
                raise UsageError(f"mlflow.tracking_uri: {db}: cannot write the database ({error.strerror or error})") from None
    elif tracking_uri.startswith(("http://", "https://")) and not any(
            os.environ.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")):
        url = urlparse(tracking_uri)  # behind a proxy a direct connection proves nothing: MLflow decides
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname or "", port), timeout=5).close()
        except OSError as error:
            raise UsageError(f"mlflow.tracking_uri: {tracking_uri}: no tracking server answers there "
                             f"({error.strerror or error})") from None
    if artifact_location and artifact_location.startswith("file://"):
        writable_folder(Path(urlparse(artifact_location).path), "mlflow.artifact_location", create=False)


def git_commit(repo: Path = REPO_ROOT) -> str:
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


def _params(candidate: Mapping[str, Any]) -> dict[str, str]:
    return {k: "full" if v is None else str(v) for k, v in candidate.items()}


class Tracker:
    """Writes one search to MLflow. Use from the driver process only.

    Args:
        tracking_uri: ``sqlite:///...`` or a tracking server address.
        experiment: experiment name; created once, with ``artifact_location``, if missing.
        search: the search's name (one parent run per search name and spec hash).
        spec_hash: hash of the spec, tagged on the parent run.
        objectives: ``[(metric, "min"|"max"), ...]``, for the aliases and the plot.
        registered_model: model-registry name under which Pareto students are registered.
        artifact_location: where the experiment's artifacts go (a new experiment only).
        card: what every student's model card shares (`pipeline.card.card_data`'s ``language``,
            ``license``, ``teacher``, ``teacher_config``, ``latency``; and ``heldout``, the text an
            export checks its ONNX graphs on).
    """

    def __init__(self, tracking_uri: str, experiment: str, *, search: str, spec_hash: str,
                 objectives: Sequence[Objective], registered_model: str,
                 artifact_location: str | None = None, card: Mapping[str, Any] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.search = search
        self.spec_hash = spec_hash
        self.objectives = list(objectives)
        self.registered_model = registered_model
        db = _sqlite_path(tracking_uri)
        check_store(tracking_uri, artifact_location)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            self.experiment_id = self._experiment(experiment, db, artifact_location)
        except (MlflowException, SQLAlchemyError, OSError) as error:
            raise UsageError(f"mlflow.tracking_uri: {tracking_uri}: cannot open the tracking store "
                             f"({type(error).__name__}: {_first_line(error)})") from None
        self.parent_id: str | None = None
        self.teacher: dict[str, float] = {}
        self.card = dict(card or {})
        self._versions: dict[str, str] | None = None  # run id -> registered version, read on first use
        self._aliases: dict[str, str] = {}
        self._model_ids: dict[str, str | None] = {}  # run id -> its transformers-flavour model, if any

    def _experiment(self, name: str, db: Path | None, location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(_EXPERIMENT_KIND[0]) != _EXPERIMENT_KIND[1]:
                self.client.set_experiment_tag(found.experiment_id, *_EXPERIMENT_KIND)
            return found.experiment_id
        if location is None and db is not None:
            location = (db.parent / "artifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=location, tags=dict([_EXPERIMENT_KIND]))

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
        flat = {"spec_hash": self.spec_hash, **params}
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

    def log_spent(self, wall_s: float, gpu_s: float, budget_s: float | None) -> None:
        """What the search has spent so far (``spent_s``, ``gpu_seconds``) and its budget (``budget_s``)."""
        values = {"spent_s": wall_s, "gpu_seconds": gpu_s, **({"budget_s": budget_s} if budget_s else {})}
        self.client.log_batch(self._parent(), metrics=[Metric(k, float(v), _now(), 0) for k, v in values.items()])

    def spent(self) -> tuple[float, float]:
        """``(spent_s, gpu_seconds)`` an earlier run of this search recorded (zeros when none)."""
        metrics = self.client.get_run(self._parent()).data.metrics
        return float(metrics.get("spent_s", 0.0)), float(metrics.get("gpu_seconds", 0.0))
    def log_screening(self, path: str) -> None:
        """The screening's record (`search.screening`) as an artifact of the search's run."""
        self.client.log_artifact(self._parent(), path)

    def describe(self, markdown: str) -> None:
        """Set the parent run's description (shown on its page in the UI), e.g. the Pareto table."""
        self.client.set_tag(self._parent(), "mlflow.note.content", markdown)

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status)

    def _parent(self) -> str:
        if self.parent_id is None:
            raise RuntimeError("Tracker.start() must be called before logging trials")
        return self.parent_id

    # ---------------------------------------------------------------- trial runs
    def read_records(self) -> list[dict[str, Any]]:
        """One plain record per trial run of this search (the resume reads them once).

        Returns:
            ``{"id", "run_id", "params", "metrics", "failed", "finished", "feasible", "pareto"}``
            dicts; ``finished`` is False for a run a killed driver left half-written.
        """
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self._parent()}'",
            max_results=50_000,
        )
        records = []
        for run in runs:
            tags = run.data.tags
            if "lrl.trial_id" not in tags:
                continue
            records.append({
                "id": tags["lrl.trial_id"], "run_id": run.info.run_id, "params": dict(run.data.params),
                "metrics": dict(run.data.metrics), "failed": run.info.status == "FAILED",
                "finished": run.info.status in ("FINISHED", "FAILED"),
                "feasible": tags.get("feasible", "true") != "false", "pareto": tags.get("pareto") == "true",
                "rungs": {int(r): v for r, v in json.loads(tags.get("lrl.rungs", "{}")).items()},
                "rung": int(tags["rung"]) if "rung" in tags else None, "rescored": tags.get("rescored") == "true",
            })
        return records

    def _open_trial_run(self, trial_id: str, name: str, candidate: Mapping[str, Any], run_id: str | None) -> str:
        if run_id is not None:  # a half-written or failed run of this trial: complete it in place
            self.client.update_run(run_id, status="RUNNING")
            # the params again: a driver killed right after create_run left none (same values are allowed)
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in _params(candidate).items()])
            return run_id
        tags = {"mlflow.parentRunId": self._parent(), "lrl.trial_id": trial_id,
                "lrl.search": self.search, "mlflow.runName": name}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in _params(candidate).items()])
        return run.info.run_id

    def log_trial(self, trial_id: str, candidate: Mapping[str, Any], result: Mapping[str, Any],
                  metrics: Mapping[str, float], *, name: str, feasible: bool, pareto: bool,
                  run_id: str | None = None, rungs: Mapping[int, Mapping[str, float]] | None = None) -> str:
        """Log one finished trial; returns its run id.

        Args:
            trial_id: stable id of the trial (Ray's trial id), the resume key.
            candidate: the candidate's fields (logged as params).
            result: `pipeline.trial.run_trial`'s dict, logged as ``trial.json``; ``model_dir`` is
                logged as artifact ``model``.
            metrics: the flat metrics to log (`search.book.trial_metrics`).
            name: the run's name.
            feasible: False for a candidate that breaks a constraint (kept off the Pareto front).
            pareto: whether the trial is on the front now.
            run_id: an existing run of this trial to complete instead of a new one.
            rungs: multi-fidelity's ``{rung: objectives}``; each logged as that metric's history (step
                = the rung's distillation steps), and the tags ``rung`` (the highest) and ``lrl.rungs``.
        """
        run_id = self._open_trial_run(trial_id, name, candidate, run_id)
        tags = {"feasible": str(feasible).lower(), "pareto": str(pareto).lower()}
        for key, value in (result.get("config") or {}).items():
            tags[f"student.{key}"] = str(value)
        model_dir = result.get("model_dir")
        has_model = bool(model_dir) and Path(model_dir).is_dir()
        card = self._card(result, name=name, run_id=run_id, trial_id=trial_id) if has_model else None
        if has_model and any((Path(model_dir) / weights).is_file() for weights in _WEIGHTS):
            model_id = self._log_transformers(run_id, str(model_dir), card["text"])
            if model_id is not None:
                tags[_MODEL_ID_TAG] = model_id
        self._model_ids[run_id] = tags.get(_MODEL_ID_TAG)
        now = _now()
        history = []
        if rungs:
            tags.update({"rung": str(max(rungs)), "lrl.rungs": json.dumps({str(r): v for r, v in sorted(rungs.items())})})
            # a rung ranked by a cheap signal logs only what it measured on the model: its task objectives
            # held the signal (the run's signal_<name> metric), not scores
            history = [Metric(k, v, now, int(r)) for r, values in sorted(rungs.items()) for k, v in values.items()
                       if k != "feasible" and _finite(v) and (not values.get("signal") or k in MODEL_METRICS)]
        step = int(max(rungs)) if rungs else 0
        self.client.log_batch(run_id, metrics=history + [Metric(k, v, now, step) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_text(run_id, json.dumps(_jsonable(result), indent=2, sort_keys=True), "trial.json")
        if has_model:
            with _with_card(Path(model_dir), card) as folder:
                self.client.log_artifacts(run_id, str(folder), "model")
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def log_rescored(self, run_id: str, trial_id: str, result: Mapping[str, Any], metrics: Mapping[str, float], *,
                     name: str, feasible: bool, rung: int) -> None:
        """Replace a logged trial's scores with those of its full evaluation (the search's final rescoring).

        The metrics are logged again at the rung's step (later, so MLflow shows them as the run's own;
        the rung history keeps the cheaper scores), then ``trial.json``, the model card of the run's
        ``model`` folder and of its transformers model. The tag ``rescored`` comes last: a rescoring cut
        short is done again on resume.
        """
        now = _now()
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, int(rung)) for k, v in metrics.items()],
                              tags=[RunTag("feasible", str(feasible).lower())])
        self.client.log_text(run_id, json.dumps(_jsonable(result), indent=2, sort_keys=True), "trial.json")
        model_dir = result.get("model_dir")
        if model_dir and Path(model_dir).is_dir():
            card = self._card(result, name=name, run_id=run_id, trial_id=trial_id)
            self.client.log_text(run_id, card["text"], "model/README.md")
            self.client.log_text(run_id, json.dumps(_jsonable(card["data"]), indent=2) + "\n", "model/card.json")
            model_id = self._model_id(run_id)
            if model_id is not None:
                with tempfile.TemporaryDirectory(prefix="lrl-card-") as scratch:
                    (Path(scratch) / _MLFLOW_CARD).write_text(card["text"], encoding="utf-8")
                    self.client.log_model_artifacts(model_id, scratch)
        self.client.set_tag(run_id, "rescored", "true")

    def _card(self, result: Mapping[str, Any], *, name: str, run_id: str, trial_id: str) -> dict[str, Any]:
        """The student's model card (text) and its data, from the trial's result and the search's defaults."""
        from pipeline.card import card_data, model_card

        defaults = {key: self.card.get(key) for key in ("language", "license", "teacher", "teacher_config", "latency")}
        data = card_data(result, name=f"{self.registered_model} {name}", reference=self.teacher, **defaults,
                         source={"tracking_uri": self.tracking_uri, "run_id": run_id, "trial": trial_id,
                                 "search": self.search})
        if self.card.get("heldout"):
            data["heldout"] = dict(self.card["heldout"])
        return {"data": data, "text": model_card(data)}

    def _log_transformers(self, run_id: str, model_dir: str, card_text: str) -> str | None:
        """Log ``model_dir`` as an MLflow model of the transformers flavour (fill-mask); returns its id.

        The logged model is created in this experiment first (MLflow would put it in the active one).
        A directory that does not load as a fill-mask pipeline is logged as the plain folder only (one
        warning line; its registered version then points at the folder): tracking must not end a search.
        """
        import transformers
        from huggingface_hub import ModelCard

        try:
            pipe = transformers.pipeline("fill-mask", model=model_dir, tokenizer=model_dir, device="cpu")
        except Exception as error:  # noqa: BLE001 - any loading error; the folder is still logged
            logger.warning("%s does not load as a transformers fill-mask model (%s); logged as a plain folder",
                           model_dir, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
            return None
        logged = self.client.create_logged_model(self.experiment_id, name="student", source_run_id=run_id)
        with _use_tracking_uri(self.tracking_uri):  # log_model writes through the fluent API
            mlflow.transformers.log_model(
                pipe, name="student", task="fill-mask", run_id=run_id, model_id=logged.model_id,
                model_card=ModelCard(card_text), pip_requirements=_requirements(),
            )
        return logged.model_id

    def log_failure(self, trial_id: str, candidate: Mapping[str, Any], error: str, *, name: str,
                    attempts: int | None = None, run_id: str | None = None) -> str:
        """Record a trial that failed for good as a FAILED run with its error; returns the run id."""
        run_id = self._open_trial_run(trial_id, name, candidate, run_id)
        first_line = next((line for line in reversed(error.strip().splitlines()) if line.strip()), error)
        tags = [RunTag("error", first_line[:_TAG_LIMIT]), RunTag("pareto", "false"), RunTag("feasible", "true")]
        if attempts is not None:
            tags.append(RunTag("attempts", str(attempts)))
        self.client.log_batch(run_id, tags=tags)
        self.client.log_text(run_id, error, "error.txt")
        self.client.set_terminated(run_id, "FAILED")
        return run_id

    # ---------------------------------------------------------------- Pareto front
    def set_pareto(self, changes: Mapping[str, bool]) -> None:
        """Re-tag the trial runs whose membership of the front changed (``{run_id: on_front}``)."""
        for run_id, on_front in changes.items():
            self.client.set_tag(run_id, "pareto", str(on_front).lower())
            version = self._registered().get(run_id)
            if version is not None:
                self.client.set_model_version_tag(self.registered_model, version, "pareto", str(on_front).lower())

    def register(self, members: Sequence[Mapping[str, Any]], wanted: Mapping[str, str], *,
                 renumber: bool = False) -> None:
        """Register the front's students that are not registered yet and move the aliases that changed.

        Args:
            members: the front's records (``id``, ``run_id``, ``metrics``), best first objective first.
            wanted: ``{alias: run id}`` as the search chose them (`search.book.aliases`); an alias whose
                run has no model to register is left where it is.
            renumber: the ``pareto-<k>`` aliases were renumbered (once, when the search ends: every
                insertion into the front would shift them all): those no longer wanted are removed.
        """
        if not members:
            return
        versions = self._registered()
        for record in members:
            run_id = record["run_id"]
            if run_id in versions:
                continue
            model_id = self._model_id(run_id)
            if model_id is not None:  # the transformers-flavour model: MLflow's loaders read it
                source, extra = f"models:/{model_id}", {"model_id": model_id}
            elif self._has_model(run_id):  # a plain folder (no weights to make a flavour model of)
                source, extra = f"{self._artifact_uri(run_id)}/model", {}
            else:
                continue
            with _use_tracking_uri(self.tracking_uri):  # MLflow 3.17 resolves a models:/ source on the global store
                versions[run_id] = self.client.create_model_version(
                    self.registered_model, source=source, run_id=run_id, await_creation_for=0,
                    tags={"lrl.trial_id": record["id"], "lrl.search": self.search, "pareto": "true"}, **extra,
                ).version
        wanted = {alias: versions[run_id] for alias, run_id in wanted.items() if run_id in versions}
        if renumber:
            for alias in [a for a in self._aliases if a.startswith("pareto-") and a not in wanted]:
                self.client.delete_registered_model_alias(self.registered_model, alias)
                del self._aliases[alias]
        for alias, version in wanted.items():
            if self._aliases.get(alias) != version:
                self.client.set_registered_model_alias(self.registered_model, alias, version)
                self._aliases[alias] = version

    def _registered(self) -> dict[str, str]:
        """``{run_id: version}`` of the registered model (read once; the model is created if missing)."""
        if self._versions is None:
            name = self.registered_model
            try:
                self._aliases = dict(self.client.get_registered_model(name).aliases or {})
            except MlflowException:
                self.client.create_registered_model(name, description=f"Pareto-optimal students of the search {self.search}")
                self._aliases = {}
            self._versions = {v.run_id: v.version for v in self.client.search_model_versions(f"name = '{name}'")}
        return self._versions

    def _model_id(self, run_id: str) -> str | None:
        if run_id not in self._model_ids:  # a run logged before a resume: read its tag once
            self._model_ids[run_id] = self.client.get_run(run_id).data.tags.get(_MODEL_ID_TAG)
        return self._model_ids[run_id]

    def _artifact_uri(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.artifact_uri

    def _has_model(self, run_id: str) -> bool:
        return "model" in {f.path for f in self.client.list_artifacts(run_id)}

    def plot(self, records: Sequence[Mapping[str, Any]]) -> None:
        """The front and every finished trial on the first two objectives, as ``pareto_front.png``."""
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


# ---------------------------------------------------------------- reading a student back (search.export)


def find_student(tracking_uri: str, *, run_id: str | None = None, alias: str | None = None,
                 model_name: str | None = None, experiment: str | None = None) -> str:
    """The run id of a logged student, given directly or as a registry alias.

    The registered model is ``model_name``, else ``<experiment>-student``, else the store's only
    registered model.

    Raises:
        UsageError: one line, for a run or alias that does not exist or an ambiguous model name.
    """
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise UsageError(f"--run {run_id}: no such run in {tracking_uri}") from None
        if "lrl.trial_id" not in run.data.tags:
            raise UsageError(f"--run {run_id}: not a trial run of a search (no lrl.trial_id tag)")
        return run_id
    if model_name is None and experiment is not None:
        from search.schema import slug

        model_name = f"{slug(experiment)}-student"
    if model_name is None:
        names = sorted(model.name for model in client.search_registered_models())
        if len(names) != 1:
            found = ", ".join(names) if names else "none"
            raise UsageError(f"--alias {alias}: name the registered model with --model-name (registered: {found})")
        model_name = names[0]
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        raise UsageError(f"--alias {alias}: no such alias of the registered model {model_name!r} in {tracking_uri}") from None
    return version.run_id


def download_student(tracking_uri: str, run_id: str, dst: str | Path) -> Path:
    """Download the student of ``run_id`` (its ``model`` artifact: weights, tokenizer, card) into ``dst``."""
    client = MlflowClient(tracking_uri=tracking_uri)
    if "model" not in {f.path for f in client.list_artifacts(run_id)}:
        raise UsageError(f"run {run_id}: has no model artifact (a failed trial, or one that logged no student)")
    return Path(client.download_artifacts(run_id, "model", str(dst)))


def _flat_reference(reference: Mapping[str, Any]) -> dict[str, float]:
    """Teacher reference -> {metric: value}: ``quality``, task scores, ``params``, ``disk_mb``."""
    flat = {k: v for k, v in reference.items() if _finite(v)}
    for task, score in (reference.get("scores") or {}).items():
        if _finite(score):
            flat[task] = score
    return flat


@contextlib.contextmanager
def _with_card(model_dir: Path, card: Mapping[str, Any]) -> Iterator[Path]:
    """A folder with ``model_dir``'s files (linked, not copied: it is a shared stage output) plus the card
    (``README.md``) and its data (``card.json``), so the model artifact is logged in one write."""
    with tempfile.TemporaryDirectory(prefix="lrl-model-") as scratch:
        folder = Path(scratch)
        for path in model_dir.iterdir():
            if path.name not in ("README.md", "card.json"):
                (folder / path.name).symlink_to(path.resolve(), target_is_directory=path.is_dir())
        (folder / "README.md").write_text(card["text"], encoding="utf-8")
        (folder / "card.json").write_text(json.dumps(_jsonable(card["data"]), indent=2) + "\n", encoding="utf-8")
        yield folder


def _requirements() -> list[str]:
    """What a logged student needs to load: given, so MLflow does not infer it (which loads the model again)."""
    import tokenizers
    import torch
    import transformers

    return [f"transformers=={transformers.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"tokenizers=={tokenizers.__version__}", "sentencepiece", "protobuf"]


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


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
