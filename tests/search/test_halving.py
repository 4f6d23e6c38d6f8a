"""The search's scheduler (`search.tuner.MultiObjectiveHalving`) driven with hand-made arrivals: every
decision it takes is the one `search.pareto.promoted` gives for the trials at that rung, in arrival
order, with infeasible trials worst and results before a restart seeded back."""

from __future__ import annotations

import random

from ray.tune.schedulers import TrialScheduler

from search.pareto import promoted
from search.tuner import MultiObjectiveHalving

OBJECTIVES = [("quality", "max"), ("params", "min")]


class Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _values(metrics: dict) -> tuple[float, ...]:
    if not metrics.get("feasible", 1):
        return (float("inf"), float("inf"))
    return (-metrics["quality"], metrics["params"])


def test_every_decision_is_promoted_in_arrival_order():
    rng = random.Random(7)
    scheduler = MultiObjectiveHalving(OBJECTIVES, (10, 30, 90), reduction_factor=3)
    at_rung: dict[int, dict[str, tuple[float, ...]]] = {10: {}, 30: {}}
    decisions = []
    going = {}
    for number in range(30):  # trials arrive one after another; each reports at each rung until stopped
        trial, metrics = Trial(f"t{number}"), {"quality": rng.random(), "params": rng.randint(1, 100), "feasible": 1}
        if number % 7 == 6:
            metrics["feasible"] = 0
        for rung in (10, 30):
            metrics = {**metrics, "quality": metrics["quality"] + 0.01 * rung, "rung": rung}
            at_rung[rung][trial.trial_id] = _values(metrics)
            expected = promoted(at_rung[rung], trial.trial_id, 3)
            decision = scheduler.on_trial_result(None, trial, metrics)
            decisions.append(decision)
            assert decision == (TrialScheduler.CONTINUE if expected else TrialScheduler.STOP), (number, rung)
            if decision == TrialScheduler.STOP:
                break
        else:
            going[trial.trial_id] = scheduler.on_trial_result(None, trial, {**metrics, "rung": 90})
    # the first trial always goes on; the top rung never stops anyone; some trials stopped at each rung
    assert decisions[:2] == [TrialScheduler.CONTINUE] * 2 and set(going.values()) == {TrialScheduler.CONTINUE}
    assert 1 < len(going) < 30 and TrialScheduler.STOP in decisions
    # an infeasible trial never goes on once another trial is at its rung
    assert all(len(at_rung[10]) == 1 or not promoted(at_rung[10], f"t{n}", 3) for n in range(6, 30, 7))


def test_results_seeded_after_a_restart_count_like_live_ones():
    live = MultiObjectiveHalving(OBJECTIVES, (10, 90), reduction_factor=2)
    seeded = MultiObjectiveHalving(OBJECTIVES, (10, 90), reduction_factor=2)
    history = {10: {"a": {"quality": 0.9, "params": 5}, "b": {"quality": 0.1, "params": 50}}}
    for trial_id, metrics in history[10].items():
        live.on_trial_result(None, Trial(trial_id), {**metrics, "rung": 10})
    seeded.seed(history)
    late = {"quality": 0.5, "params": 20, "rung": 10}
    assert (live.on_trial_result(None, Trial("c"), late) == seeded.on_trial_result(None, Trial("c"), late)
            == (TrialScheduler.CONTINUE if promoted({"a": (-0.9, 5), "b": (-0.1, 50), "c": (-0.5, 20)}, "c", 2)
                else TrialScheduler.STOP))


def test_the_time_budget_counts_from_when_the_search_began():
    """Screening runs before the first trial: a budget that screening used up lets no trial start."""
    import time

    from ray.tune.search import Searcher

    from search.tuner import _Budgeted

    class Always(Searcher):
        def suggest(self, trial_id):
            return {"x": 1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    fresh = _Budgeted(Always(metric="m", mode="max"), max_concurrent=2, budget_s=60)
    assert fresh.suggest("t1") == {"x": 1}
    spent = _Budgeted(Always(metric="m", mode="max"), max_concurrent=2, budget_s=60, started=time.time() - 61)
    assert spent.suggest("t1") == Searcher.FINISHED
