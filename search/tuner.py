"""Ray Tune around the objective: the trainable, the Tuner and its callback. The only module that
imports ray.

The trainable turns sampled values into a candidate, calls `search.objective.evaluate_candidate` and
reports the trial's objectives: once, or once per rung of multi-fidelity. The searcher is
``OptunaSearch`` (several objectives, the spec's seeded sampler, the study in SQLite) behind a
``ConcurrencyLimiter`` that also keeps the time budget. The callback hands each rung result and each
finished or failed trial to the driver's `search.book.TrialBook` in the driver process.

Multi-fidelity (``search.fidelity``): `MultiObjectiveHalving` is asynchronous successive halving for
several objectives, a Tune scheduler. When a trial reports at a rung it is compared with every trial
that reached that rung so far and continues only when it is among the best ``1 / reduction_factor``
by non-dominated rank and crowding distance (`search.pareto.promoted`); otherwise it stops there and
Optuna is told its objectives at that rung (its last report). Below the top rung a trial scores
with ``search.fidelity.rung_evaluation`` where the spec sets one (trials are compared only with others
at the same rung, so the cheaper scores rank them fairly); when the trials are done, `rescore` scores
the front's members among them again in full, as Ray tasks with a trial's resources. Ray does not
save a scheduler's state with the experiment: on ``--resume`` the driver's records seed it again.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Stack notes: importing torch for the first time after ray.init() crashed with an MKL error in
# Ray jobs; import it before anything starts Ray.
import torch
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from pipeline.config import Candidate
from pipeline.errors import UsageError
from search.book import TrialBook
from search.folders import remove_markers, steady_working_dir, unshared_message, write_markers
from search.objective import TrialContext, evaluate_candidate, screen_candidate
from search.pareto import promoted
from search.sampler import distributions, make_sampler, study_storage
from search.schema import Spec
from search.space import label, to_candidate

__all__ = ["MultiObjectiveHalving", "Outcome", "check_nodes", "rescore", "run_tuner", "screen", "start_ray", "trainable"]

logger = logging.getLogger(__name__)


def trainable(config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable: one candidate, one ``tune.report`` with every objective.

    An exception (a NaN loss's FloatingPointError included) fails the trial; Tune retries it up to
    ``search.max_failures`` times.
    """
    candidate = to_candidate(config)
    progress = _worker(label(candidate))
    progress("start")
    for rung in context.rungs or (None,):  # a trial the scheduler stops is not called back after its report
        if rung is not None:
            progress(f"rung {rung} ({rung} distillation steps)")
        tune.report(_report(evaluate_candidate(context, candidate, progress, rung=rung), rung))


def _worker(name: str) -> Callable[[str], None]:
    """Set up a Ray worker for a trial's work; returns its progress printer (to the worker's stderr)."""
    sys.unraisablehook = _ignore_exit
    steady_working_dir()  # a worker started in a package that was unpacked again since (search.folders)
    # As many torch threads as cores Ray gave the trial (search.resources.cpu): more threads than cores
    # oversubscribe them when trials run side by side.
    cores = ray.get_runtime_context().get_assigned_resources().get("CPU") or 1
    torch.set_num_threads(max(1, int(cores)))

    def progress(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return progress


def _report(outcome: dict[str, Any], rung: int | None) -> dict[str, Any]:
    """A trial's report to Tune (and of its rescoring) from `evaluate_candidate`'s outcome."""
    report = {**outcome["metrics"], "feasible": int(outcome["feasible"]),
              "result_json": json.dumps(outcome["result"], default=str)}
    if "signal" in outcome["result"]:  # the task objectives hold a cheap signal here (search.objective)
        report["signal"] = outcome["result"]["signal"]["name"]
    return report if rung is None else {**report, "rung": rung}  # rung 0 is a rung too


def _ignore_exit(unraisable) -> None:
    """Ray ends a finished trial's worker with ``SystemExit``; raised where Python cannot propagate it (a
    finaliser, a thread) it printed "Exception ignored in ... SystemExit: 1" with a traceback in the middle
    of a successful run. That one is expected and dropped; anything else is printed as usual."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


@dataclass(frozen=True)
class Outcome:
    """One trial as Tune ended it: its id, candidate, last reported metrics and error text (or None)."""

    trial_id: str | None
    candidate: Candidate
    metrics: dict[str, Any]
    error: str | None


class _Forward(Callback):
    """Hands finished and failed trials to the driver's TrialBook, in the driver process.

    Tune pickles its callbacks into the experiment folder and a restored Tuner brings them back from
    there: the book is left out of the pickle (`__getstate__`) and `run_tuner` attaches the current
    one after a restore. With Ray Client (``ray://``) Tune runs on the head node, where no book
    exists: the driver then records every trial from the results when the search ends.
    """

    def __init__(self, book: TrialBook | None, max_failures: int) -> None:
        self.book, self.max_failures = book, max_failures

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "book": None}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.book is not None and result.get("rung") is not None:
            _safe(self.book.rung_result, trial.trial_id, result)

    def on_trial_start(self, iteration, trials, trial, **info):
        logger.info("trial %s %s started", trial.trial_id, _label(trial.config))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.book is not None:
            _safe(self.book.finished, trial.trial_id, to_candidate(trial.config), trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.book is not None:
            _safe(self.book.failed, trial.trial_id, to_candidate(trial.config), _error_text(trial), trial.num_failures)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if self.book is not None:
            _safe(self.book.retrying, trial.trial_id, to_candidate(trial.config), _error_text(trial),
                  trial.num_failures, self.max_failures + 1)


class MultiObjectiveHalving(FIFOScheduler):
    """Asynchronous successive halving over the rungs of ``context.rungs``, for several objectives.

    Args:
        objectives: ``[(metric, "min" | "max"), ...]``.
        rungs: the rungs' steps, increasing; the last one is the full run.
        reduction_factor: only the best ``1 / reduction_factor`` at a rung continue.
    """

    def __init__(self, objectives, rungs: tuple[int, ...], reduction_factor: int) -> None:
        super().__init__()
        self.objectives, self.rungs, self.reduction_factor = list(objectives), tuple(rungs), reduction_factor
        self.results: dict[int, dict[str, tuple[float, ...]]] = {rung: {} for rung in self.rungs[:-1]}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives are given to the constructor: Tune's single metric does not fit

    def values(self, metrics: dict) -> tuple[float, ...]:
        """The objectives as minimised values; an infeasible trial is worse than every feasible one."""
        if not metrics.get("feasible", 1):
            return tuple(float("inf") for _ in self.objectives)
        return tuple(float(metrics[m]) if d == "min" else -float(metrics[m]) for m, d in self.objectives)

    def seed(self, history: dict[int, dict[str, dict]]) -> None:
        """Rung results recorded before a restart: ``{rung: {trial id: metrics}}``."""
        for rung, trials in history.items():
            if rung in self.results:
                for trial_id, metrics in trials.items():
                    self.results[rung].setdefault(trial_id, self.values(metrics))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        rung = result.get("rung")
        if rung not in self.results:
            return TrialScheduler.CONTINUE
        here = self.results[rung]
        here[trial.trial_id] = self.values(result)
        if promoted(here, trial.trial_id, self.reduction_factor):
            logger.info("trial %s goes on past rung %d (%d trials there)", trial.trial_id, rung, len(here))
            return TrialScheduler.CONTINUE
        logger.info("trial %s stops at rung %d (%d trials there)", trial.trial_id, rung, len(here))
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return "MultiObjectiveHalving: " + ", ".join(f"rung {r}: {len(t)}" for r, t in self.results.items())


class _Budgeted(ConcurrencyLimiter):
    """The concurrency limit, plus the time budget: no trial starts that would not end within it.

    A trial is expected to take as long as the finished ones did on average (before the first one
    ends, trials start freely, up to the concurrency limit). Running trials always finish.
    """

    def __init__(self, searcher, max_concurrent: int, budget_s: float | None, started: float | None = None) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.budget_s, self.started = budget_s, time.time() if started is None else started
        self.durations: list[float] = []
        self.starts: dict[str, float] = {}
        self.exhausted = False

    def suggest(self, trial_id: str):
        if self.budget_s is not None:
            expected = sum(self.durations) / len(self.durations) if self.durations else 0.0
            if time.time() - self.started + expected > self.budget_s:
                if not self.exhausted:
                    logger.info("time budget: %.0f of %.0f s spent and a trial takes about %.0f s: no new trial",
                                time.time() - self.started, self.budget_s, expected)
                self.exhausted = True
                return Searcher.FINISHED
        suggestion = super().suggest(trial_id)
        if isinstance(suggestion, dict):
            self.starts[trial_id] = time.time()
        return suggestion

    def set_state(self, state: dict) -> None:
        """Tune restores the saved state inside ``fit()``: keep the clock the driver set for this run and
        forget start times of trials that a restart cut short."""
        live = {"started": self.started, "budget_s": self.budget_s, "starts": {}, "exhausted": False}
        super().set_state(state)
        self.__dict__.update(live)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        if trial_id in self.starts:
            self.durations.append(time.time() - self.starts.pop(trial_id))
        super().on_trial_complete(trial_id, result=result, error=error)


def run_tuner(spec: Spec, context: TrialContext, name: str, book: TrialBook,
              first: list[dict[str, Any]] | None = None, started: float | None = None) -> Iterator[Outcome]:
    """Start or join Ray, run (or restore and continue) the Tune experiment ``name``, yield every trial.

    Args:
        spec: the search's spec (sampler, resources, failures, storage, Ray address).
        context: what every trial needs.
        name: the experiment's folder under ``search.storage_path``; restored when it exists.
        book: the driver's `search.book.TrialBook`, told of each trial as it ends.
        first: sampled values (`search.space.to_params`) the first trials take, in order, before the
            sampler proposes (the screening's order); a restored experiment keeps its own.
        started: when this run of the search began (``time.time()``; default now): the time budget
            counts from there, so that screening before the trials counts too.
    """
    start_ray(spec.ray.address)
    _preload()
    storage = Path(spec.search.storage_path)
    storage.mkdir(parents=True, exist_ok=True)
    resources = {"cpu": spec.search.resources.cpu, "gpu": spec.search.resources.gpu}
    fn = tune.with_resources(tune.with_parameters(trainable, context=context), resources)
    callback = _Forward(book, spec.search.max_failures)
    path = storage / name
    if path.exists() and tune.Tuner.can_restore(str(path)):
        logger.info("restoring the Tune experiment %s", path)
        tuner = tune.Tuner.restore(str(path), trainable=fn, resume_errored=True)
        # Ray 2.60 restores the run and tune configs from the experiment's tuner.pkl and offers no
        # public setter: hand the restored run the current callback, the rung results recorded so
        # far (a scheduler's state is not saved) and a budget clock that counts the time already spent.
        local = tuner._local_tuner
        local.get_run_config().callbacks = [callback]
        scheduler, searcher = local._tune_config.scheduler, local._tune_config.search_alg
        if isinstance(scheduler, MultiObjectiveHalving):
            scheduler.seed(book.rung_history())
        if isinstance(searcher, _Budgeted):
            searcher.started = (started or time.time()) - book.spent_s
    else:
        metrics, modes = zip(*context.objectives)
        searcher = OptunaSearch(
            space=distributions(spec), metric=list(metrics), mode=list(modes),
            sampler=make_sampler(spec, context.teacher_config), storage=study_storage(spec.study_storage),
            study_name=name, points_to_evaluate=list(first) if first else None,
        )
        fidelity = spec.search.fidelity
        scheduler = (MultiObjectiveHalving(context.objectives, context.rungs, fidelity.reduction_factor)
                     if fidelity else None)
        tuner = tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(
                search_alg=_Budgeted(searcher, spec.search.max_concurrent, spec.search.time_budget_s, started),
                num_samples=spec.search.num_samples, reuse_actors=False, scheduler=scheduler,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), callbacks=[callback], verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.search.max_failures),
            ),
        )
    for result in tuner.fit():
        metrics = result.metrics or {}
        error = None if result.error is None else str(result.error)
        yield Outcome(metrics.get("trial_id"), to_candidate(result.config), metrics, error)


def _score_in_full(context: TrialContext, candidate: Candidate, rung: int) -> dict[str, Any]:
    """A Ray task: ``candidate``'s student at ``rung`` (from the stage cache) scored with the full evaluation."""
    progress = _worker(f"{label(candidate)} rescoring")
    return _report(evaluate_candidate(context, candidate, progress, rung=rung, full_scoring=True), rung)


def rescore(spec: Spec, context: TrialContext, trials: list[tuple[str, Candidate, int]]) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """Score trials that stopped below the top rung again with the full evaluation, as Ray tasks with a
    trial's resources, ``search.max_concurrent`` at a time; their students come from the stage cache.

    Args:
        trials: ``(trial id, candidate, rung it stopped at)``.

    Yields:
        ``(trial id, report, None)`` as each ends (``report`` like a trial's last ``tune.report``), or
        ``(trial id, None, error text)`` for one that failed.
    """
    yield from _tasks(spec, _score_in_full, [(trial_id, (context, candidate, rung)) for trial_id, candidate, rung in trials])


def _screen_one(context: TrialContext, candidate: Candidate, signal: str, evaluation, cfg) -> dict[str, Any]:
    """A Ray task: ``candidate``'s student at rung 0 and its cheap signal (`search.objective.screen_candidate`)."""
    return screen_candidate(context, candidate, signal, evaluation, cfg, _worker(f"{label(candidate)} screening"))


def screen(spec: Spec, context: TrialContext, candidates: list[Candidate]) -> Iterator[tuple[Candidate, dict[str, Any] | None, str | None]]:
    """Build every candidate to rung 0 and score it with ``search.screen.signal``, as Ray tasks with a
    trial's resources, ``search.max_concurrent`` at a time.

    Yields:
        ``(candidate, result, None)`` as each ends (`pipeline.trial.screen_student`'s dict), or
        ``(candidate, None, error text)`` for one that failed.
    """
    cfg = spec.search.screen
    evaluation = cfg.evaluation.apply(spec.evaluation)
    jobs = [(candidate, (context, candidate, cfg.signal, evaluation, cfg.settings)) for candidate in candidates]
    yield from _tasks(spec, _screen_one, jobs)


def _tasks(spec: Spec, fn: Callable[..., Any], jobs: list[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any, str | None]]:
    """``fn(*args)`` of each ``(id, args)`` of ``jobs`` as a Ray task with a trial's resources (and
    retries), ``search.max_concurrent`` at a time; yields ``(id, result, None)`` or ``(id, None, error
    text)`` as each ends."""
    task = ray.remote(fn).options(num_cpus=spec.search.resources.cpu, num_gpus=spec.search.resources.gpu,
                                  max_retries=spec.search.max_failures)
    waiting, running = list(jobs), {}
    while waiting or running:
        while waiting and len(running) < spec.search.max_concurrent:
            job, args = waiting.pop(0)
            running[task.remote(*args)] = job
        (done,), _ = ray.wait(list(running), num_returns=1)
        job = running.pop(done)
        try:
            result, error = ray.get(done), None
        except ray.exceptions.RayError as failure:
            result, error = None, str(failure)
        yield job, result, error


def start_ray(address: str) -> None:
    """Start a private Ray (``local``, no dashboard) or join the cluster at ``address``, once per process."""
    if ray.is_initialized():
        return
    if address == "local":
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
    elif address.startswith(("http://", "https://")):
        # A job-submission address: inside `ray job submit` the driver attaches with "auto".
        ray.init(address="auto")
    else:
        ray.init(address=address)


@ray.remote(num_cpus=0, max_calls=1)  # its worker exits: none started before a package was unpacked again is reused
def _look(markers: dict[str, str], inputs: dict[str, str]) -> tuple[str, list[str], list[str]]:
    import os
    import socket

    unseen = [field for field, marker in markers.items() if not os.path.isfile(marker)]
    missing = [field for field, path in inputs.items() if not os.path.exists(path)]
    return socket.gethostname(), unseen, missing


def check_nodes(folders: dict[str, str], inputs: dict[str, str], timeout: float = 300) -> int:
    """Before any trial: a task on every alive node looks for the driver's marker files and input paths.

    Args:
        folders: ``{field: folder}`` the trials share (`search.folders.search_folders`).
        inputs: ``{field: path}`` of local files the trials read (`search.folders.input_paths`).
        timeout: seconds to wait for every node's answer.

    Returns:
        The number of nodes checked.

    Raises:
        UsageError: one line naming the fields a node does not share with the driver and what to set.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    markers = write_markers(folders)
    try:
        refs = {node["NodeManagerAddress"] + " " + node["NodeID"][:8]: _look.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(markers, inputs)
            for node in nodes}
        try:
            answers = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout)))
        except ray.exceptions.GetTimeoutError:
            raise UsageError(f"not every Ray node answered within {timeout:.0f} s; check the cluster "
                             "(ray status)") from None
    finally:
        remove_markers(markers)
    for node, (host, unseen, missing) in sorted(answers.items()):
        if unseen or missing:
            raise UsageError(unshared_message(f"{host} ({node})", folders, unseen, missing, inputs))
    logger.info("%d Ray node(s) share the search's folders and inputs", len(answers))
    return len(answers)


def _preload() -> None:
    """Import now what the callback needs later (the driver's code folder may vanish in a Ray job)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _safe(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # tracking must not kill the search; the driver reconciles when the search ends
        logger.exception("recording the trial failed; it is retried when the search ends")


def _label(config: dict[str, Any]) -> str:
    try:
        return label(to_candidate(config))
    except (KeyError, TypeError, ValueError):
        return str(config)


def _error_text(trial) -> str:
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return str(trial.get_error() or "unknown error")

