"""The search's trial records, the teacher reference they are measured against, the Pareto front and the
registry aliases: plain records, decided here; a `Sink` (the MLflow tracker) only writes them down.

`TrialBook` keeps one record per trial and recomputes the front with `search.pareto.pareto_front` after
each one; the sink is told only what changed. It owns the teacher's reference (given when the search
starts: the one just computed, not an older copy read back from the tracking store) and chooses the
aliases of the registered students (`aliases`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from pipeline.config import Candidate
from search.pareto import pareto_front
from search.schema import MODEL_METRICS
from search.space import label

__all__ = ["Sink", "TrialBook", "aliases", "last_line", "trial_metrics"]

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """Where the book's records are written (`search.tracking.Tracker`); it decides nothing."""

    def log_trial(self, trial_id: str, candidate: Mapping[str, Any], result: Mapping[str, Any],
                  metrics: Mapping[str, float], *, name: str, feasible: bool, pareto: bool,
                  run_id: str | None = None, rungs: Mapping[int, Mapping[str, float]] | None = None) -> str: ...

    def log_failure(self, trial_id: str, candidate: Mapping[str, Any], error: str, *, name: str,
                    attempts: int | None = None, run_id: str | None = None) -> str: ...

    def log_rescored(self, run_id: str, trial_id: str, result: Mapping[str, Any], metrics: Mapping[str, float], *,
                     name: str, feasible: bool, rung: int) -> None: ...

    def set_pareto(self, changes: Mapping[str, bool]) -> None: ...

    def register(self, members: Sequence[Mapping[str, Any]], wanted: Mapping[str, str], *,
                 renumber: bool = False) -> None: ...

    def plot(self, records: Sequence[Mapping[str, Any]]) -> None: ...


def aliases(members: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]],
            renumber: bool = False) -> dict[str, str]:
    """``{alias: run id}`` of the front's registered students: ``best-<objective>`` for each objective
    (the best member by it) and, with ``renumber``, ``pareto-<k>`` in the members' order (best first
    objective first)."""
    wanted = {}
    for metric, direction in objectives:
        scored = [r for r in members if metric in r["metrics"]]
        if scored:
            pick = (max if direction == "max" else min)(scored, key=lambda r: r["metrics"][metric])
            wanted[f"best-{re.sub(r'[^A-Za-z0-9_-]', '-', metric)}"] = pick["run_id"]
    if renumber:
        wanted.update({f"pareto-{k}": r["run_id"] for k, r in enumerate(members, start=1)})
    return wanted


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_metrics(result: Mapping[str, Any], teacher: Mapping[str, float] | None) -> dict[str, float]:
    """Flat metrics of a `pipeline.trial.run_trial` result.

    ``params``, ``disk_mb``, ``quality``, ``latency_ms``, one score per task (named by the task; dev
    scores, what the search selects on), ``test_quality`` and ``test_<task>`` (reported, never used
    to select), ``drop_<metric>`` (teacher minus student) and ``drop_<metric>_rel`` (that over the teacher's
    score) for quality and every task, ``compression``, ``time_<stage>`` seconds and ``cpu_s`` (the CPU seconds the trial's process
    spent: its builds, the cached ones costing nothing, its evaluation and latency), and
    ``signal_<name>`` where a cheap signal scored it instead of the tasks (`pipeline.trial.score_student`).
    """
    metrics: dict[str, float] = {}
    for key in ("params", "disk_mb", "quality", "test_quality", "latency_ms"):
        if _finite(result.get(key)):
            metrics[key] = float(result[key])
    for prefix, scores in (("", result.get("scores")), ("test_", result.get("test_scores"))):
        for task, score in (scores or {}).items():
            if _finite(score):
                metrics[prefix + task] = float(score)
    for stage, seconds in (result.get("timings") or {}).items():
        if _finite(seconds):
            metrics[f"time_{stage}"] = float(seconds)
    measured = result.get("signal")
    if isinstance(measured, Mapping) and _finite(measured.get("value")):  # a rung ranked by a cheap signal
        metrics[f"signal_{measured['name']}"] = float(measured["value"])
    spent = [seconds for seconds in (result.get("cpu_s") or {}).values() if _finite(seconds)]
    if spent:  # what this trial computed; a build found in the stage cache costs it nothing
        metrics["cpu_s"] = float(sum(spent))
    for key, reference in (teacher or {}).items():
        if key in metrics and _finite(reference) and key not in MODEL_METRICS:
            metrics[f"drop_{key}"] = reference - metrics[key]
            if reference:
                metrics[f"drop_{key}_rel"] = (reference - metrics[key]) / reference
    if teacher and _finite(teacher.get("params")) and "params" in metrics:
        metrics["compression"] = 1.0 - metrics["params"] / teacher["params"]
    return metrics


class TrialBook:
    """The search's trial records and its Pareto front; MLflow is told what changed, never asked.

    A record is a plain dict: ``id`` (the trial id), ``run_id``, ``params`` (the candidate's fields),
    ``metrics``, ``failed``, ``finished`` (its MLflow run is complete), ``feasible``, ``pareto``, and
    with multi-fidelity ``rungs`` (``{rung: objectives there}``), ``rung`` (the highest it reached:
    its metrics are those of that rung, and the front is over trials at their highest rung) and
    ``rescored`` (scored again with the full evaluation after stopping below the top rung).

    Args:
        tracker: the `Sink` the records are written to (`search.tracking.Tracker`).
        objectives: ``[(metric, "min" | "max"), ...]``.
        teacher: the teacher's flat reference (``quality``, task scores, ``params``, ...) that every
            trial's drops and compression are measured against.
        num_samples: the search's trial count, for progress lines.
        records: records read back on resume (`Tracker.read_records`).
        gpus_per_trial: a trial's GPU share, to count GPU-seconds.
    """

    def __init__(self, tracker: Sink, objectives: Sequence[tuple[str, str]], num_samples: int,
                 records: Iterable[dict[str, Any]] = (), gpus_per_trial: float = 0.0,
                 teacher: Mapping[str, float] | None = None) -> None:
        self.tracker, self.objectives, self.num_samples = tracker, list(objectives), num_samples
        self.teacher = dict(teacher or {})
        self.records: dict[str, dict[str, Any]] = {r["id"]: dict(r) for r in records}
        self.rungs: dict[str, dict[int, dict[str, float]]] = {}  # trial -> rung -> objectives (running trials)
        self.spent_s = 0.0  # wall seconds of earlier runs of this search (read back on resume)
        self.gpu_seconds = 0.0
        self.gpus_per_trial = gpus_per_trial

    def rung_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Remember a trial's objectives at a rung (logged with the trial when it ends)."""
        keys = [m for m, _ in self.objectives] + ["feasible"]
        values: dict[str, Any] = {k: float(result[k]) for k in keys if k in result}
        if result.get("signal"):  # the task objectives hold that signal at this rung
            values["signal"] = str(result["signal"])
        self.rungs.setdefault(trial_id, {})[int(result["rung"])] = values

    def rung_history(self) -> dict[int, dict[str, dict[str, float]]]:
        """``{rung: {trial id: objectives}}`` of every trial recorded so far, in the order they came."""
        history: dict[int, dict[str, dict[str, float]]] = {}
        for trial_id, record in self.records.items():
            for rung, values in (record.get("rungs") or {}).items():
                history.setdefault(int(rung), {})[trial_id] = values
        for trial_id, rungs in self.rungs.items():
            for rung, values in rungs.items():
                history.setdefault(rung, {}).setdefault(trial_id, values)
        return history

    def logged(self, trial_id: str) -> bool:
        """Whether the trial finished and its run is complete (a failure may still be retried)."""
        record = self.records.get(trial_id)
        return bool(record and record["finished"] and not record["failed"])

    def finished(self, trial_id: str, candidate: Candidate, report: Mapping[str, Any]) -> None:
        """Record a finished trial from its last report (objectives, ``feasible``, ``result_json``)."""
        if self.logged(trial_id):
            logger.info("trial %s already logged, skipping", trial_id)
            return
        previous = self.records.get(trial_id)
        result = json.loads(report.get("result_json") or "{}")
        if report.get("rung") is not None:  # the last rung is in the report, whether or not its callback came
            self.rung_result(trial_id, report)
        rungs = self.rungs.pop(trial_id, {})
        record = {"id": trial_id, "run_id": previous["run_id"] if previous else None,
                  "params": dataclasses.asdict(candidate), "metrics": trial_metrics(result, self.teacher),
                  "failed": False, "finished": False, "feasible": bool(report.get("feasible", 1)), "pareto": False,
                  "rungs": rungs, "rung": max(rungs) if rungs else None}
        self.gpu_seconds += float(report.get("time_total_s") or 0.0) * self.gpus_per_trial
        self.records[trial_id] = record
        front = self.front()
        record["pareto"] = trial_id in front
        record["run_id"] = self.tracker.log_trial(
            trial_id, record["params"], result, record["metrics"], name=f"{trial_id} {label(candidate)}",
            feasible=record["feasible"], pareto=record["pareto"], run_id=record["run_id"], rungs=rungs)
        record["finished"] = True
        self._apply(front)
        done = sum(r["finished"] and not r["failed"] for r in self.records.values())
        at = f" (rung {record['rung']})" if record["rung"] is not None else ""
        logger.info("trial %d/%d %s %s%s: %s; Pareto front: %d", done, self.num_samples, trial_id, label(candidate),
                    at, _summary(record, self.objectives), len(front))

    def failed(self, trial_id: str, candidate: Candidate, error: str, attempts: int | None = None) -> None:
        """Record a trial that failed for good."""
        if trial_id in self.records and self.records[trial_id]["finished"]:
            return
        previous = self.records.get(trial_id)
        logger.error("trial %s %s failed after %s attempts: %s", trial_id, label(candidate), attempts,
                     last_line(error))
        run_id = self.tracker.log_failure(trial_id, dataclasses.asdict(candidate), error,
                                          name=f"{trial_id} {label(candidate)}", attempts=attempts,
                                          run_id=previous["run_id"] if previous else None)
        self.records[trial_id] = {"id": trial_id, "run_id": run_id, "params": dataclasses.asdict(candidate),
                                  "metrics": {}, "failed": True, "finished": True, "feasible": True, "pareto": False}

    def retrying(self, trial_id: str, candidate: Candidate, error: str, attempt: int, attempts: int) -> None:
        """Say that a trial failed and is tried again."""
        logger.warning("trial %s %s failed (attempt %d of %d), retrying: %s", trial_id, label(candidate), attempt,
                       attempts, last_line(error))

    def rescore_front(self, run: Any, candidates: Mapping[str, Candidate], top: int) -> int:
        """Score the front's members that stopped below the top rung again with the full evaluation, until
        every member of the front scored in full (or could not be rescored); returns how many were.

        Below the top rung a trial scores with the cheaper rung evaluation, which only ranks trials at
        the same rung; on the front it would stand against full scores. A rescored member may push
        others off the front and let further cheaply scored trials on, hence the loop.

        Args:
            run: `search.tuner.rescore` bound to the search: ``[(trial id, candidate, rung)]`` in,
                ``(trial id, report or None, error or None)`` out as each ends.
            candidates: ``{trial id: candidate}`` of the search's trials.
            top: the top rung's steps.
        """
        tried: set[str] = set()
        while True:
            todo = sorted(t for t in self.front() if t not in tried and t in candidates
                          and not self.records[t].get("rescored") and _below(self.records[t], top))
            if not todo:
                return sum(bool(r.get("rescored")) for r in self.records.values())
            logger.info("scoring %d front member(s) that stopped below the top rung again with the full evaluation: %s",
                        len(todo), ", ".join(f"{t} (rung {self.records[t]['rung']})" for t in todo))
            tried.update(todo)
            for trial_id, report, error in run([(t, candidates[t], self.records[t]["rung"]) for t in todo]):
                if error is not None:
                    logger.error("rescoring trial %s failed, it keeps its rung scores: %s", trial_id, last_line(error))
                    continue
                try:
                    self.rescored(trial_id, candidates[trial_id], report)
                except Exception:  # tracking must not end the search: the trial keeps its rung scores
                    logger.exception("recording the rescored trial %s failed; it keeps its rung scores", trial_id)

    def rescored(self, trial_id: str, candidate: Candidate, report: Mapping[str, Any]) -> None:
        """Replace a finished trial's scores with those of its full evaluation at the same rung."""
        record = self.records[trial_id]
        result = json.loads(report["result_json"])
        metrics, feasible = trial_metrics(result, self.teacher), bool(report.get("feasible", 1))
        self.tracker.log_rescored(record["run_id"], trial_id, result, metrics, name=f"{trial_id} {label(candidate)}",
                                  feasible=feasible, rung=record["rung"])
        before = _summary(record, self.objectives)
        record.update(metrics=metrics, feasible=feasible, rescored=True)
        front = self.front()
        self._apply(front)
        logger.info("trial %s %s rescored in full (rung %s): %s, was %s; Pareto front: %d", trial_id, label(candidate),
                    record["rung"], _summary(record, self.objectives), before, len(front))

    def front(self) -> set[str]:
        """Ids of the trials on the Pareto front (finished, feasible, every objective finite)."""
        return pareto_front(self.records.values(), self.objectives)

    def members(self) -> list[dict[str, Any]]:
        """The front's records, best first objective first."""
        metric, direction = self.objectives[0]
        on_front = [r for r in self.records.values() if r["pareto"]]
        return sorted(on_front, key=lambda r: r["metrics"][metric], reverse=direction == "max")

    def finalise(self) -> list[dict[str, Any]]:
        """Bring tags and registry up to date once more (resume, reconcile), renumber the aliases."""
        self._apply(self.front())
        members = self.members()
        self.tracker.register(members, aliases(members, self.objectives, renumber=True), renumber=True)
        return members

    def _apply(self, front: set[str]) -> None:
        changed = {}
        for record in self.records.values():
            on_front = record["id"] in front
            if record["pareto"] != on_front and record["run_id"]:
                changed[record["run_id"]] = on_front
            record["pareto"] = on_front
        self.tracker.set_pareto(changed)
        members = self.members()
        self.tracker.register(members, aliases(members, self.objectives))
        self.tracker.plot(list(self.records.values()))


def _below(record: Mapping[str, Any], top: int) -> bool:
    """Whether a trial stopped below the top rung (rung 0 included; no rung: trained in full)."""
    return record.get("rung") is not None and record["rung"] < top


def _summary(record: Mapping[str, Any], objectives: Sequence[tuple[str, str]]) -> str:
    parts = [f"{m}={record['metrics'][m]:.4g}" for m, _ in objectives if _finite(record["metrics"].get(m))]
    if not record["feasible"]:
        parts.append("infeasible")
    return " ".join(parts)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text
