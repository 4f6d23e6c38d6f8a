"""Replay search strategies against the Maltese table, with a simulated clock: which strategy finds the
front for the least compute.

    python benchmarks/replay.py --table benchmarks/results/maltese-table-cpu.json
    python benchmarks/replay.py --table TABLE --seeds 10 --out replay.json
    python benchmarks/replay.py --table TABLE --spec specs/maltese.yaml --set space.layers=[2,3] ...

Nothing is trained. Every candidate of the table's space was built and scored once (`table.py`); a
replayed search proposes candidates with the search's own sampler (`search.sampler.make_sampler`, Optuna
ask and tell) and decides promotions with its own scheduler (`search.tuner.MultiObjectiveHalving`), and
each decision costs what the table measured: a stage build the first time a candidate needs it (the
stage cache: a shared build is paid once), a cheap signal at each rung below the top, and the full
evaluation at the top rung. The clock is the sum of those CPU seconds, one trial at a time.

Strategies:
- ``full-random``, ``full-nsga2``, ``full-tpe``: every proposed candidate trained and evaluated in full;
- ``halving-<signal>``: asynchronous multi-objective successive halving over the last distillation's
  rungs above 0 (the signal and parameter count rank a rung; reduction factor 3), candidates from the
  spec's sampler (NSGA-II); a trial that stops is told to Optuna as pruned;
- ``halving0-<signal>``: the same with a rung at 0 (after the training-free stages, before the last
  distillation);
- ``screen-<signal>``: every candidate built to rung 0 and ranked by the signal and its parameter count
  (`search.screening.ranked`, as ``search.screen`` does), then trained and evaluated in full in that
  order, best first;
- ``screen-halving-<signal>``: the same screening; the best third then go through halving from the
  first trained rung, best first.

Per strategy and seed: the cost to reach 95% of the exhaustive front's dev hypervolume (quality against
parameters; the reference point is the random model's quality and the teacher's parameter count), the
dev hypervolume found at twice the paper path's cost (a fraction of the exhaustive one), and the test
hypervolume of the dev front found at the paper path's cost and at twice it. Costs are fractions of the
exhaustive cost (every candidate of the space trained and evaluated in full). The front counts only
students evaluated in full: a halving trial that stopped below the top rung has no full evaluation in
the table (as in a live search ranked by probes or MLM; under the capped evaluation a live search
rescores the front's members among them). The last lines name multi-fidelity's default (the halving
strategy with the largest median dev hypervolume at twice the paper path's cost) and the default
strategy (the cheapest to reach 95%).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from analyse_table import (Bootstrap, against_paper, cost_of, dev_front, paper_models, quality,  # noqa: E402
                           read_table, space_students)
from provenance import provenance, write_json  # noqa: E402

from pipeline.errors import UsageError  # noqa: E402
from search.pareto import hypervolume  # noqa: E402

TARGET = 0.95  # of the exhaustive front's dev hypervolume
REDUCTION_FACTOR = 3  # the search's default (search.fidelity.reduction_factor)
FULL_SAMPLERS = ("random", "nsga2", "tpe")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way to search: ``kind`` is full, halving, screen or screen-halving; ``rungs`` those of the last
    distillation that it scores (the top one in full)."""

    name: str
    kind: str
    sampler: str = "nsga2"
    signal: str | None = None
    rungs: tuple[int, ...] = ()


def strategies(table: dict) -> list[Strategy]:
    """Every strategy the table can replay: its signals at its rungs."""
    rungs = tuple(int(r) for r in table["rungs"])
    trained = tuple(r for r in rungs if r > 0)
    out = [Strategy(f"full-{s}", "full", sampler=s, rungs=rungs[-1:]) for s in FULL_SAMPLERS]
    for signal in table["signals"]:
        out.append(Strategy(f"halving-{signal}", "halving", signal=signal, rungs=trained))
        if 0 in rungs:
            out.append(Strategy(f"halving0-{signal}", "halving", signal=signal, rungs=rungs))
            out.append(Strategy(f"screen-{signal}", "screen", signal=signal, rungs=rungs[-1:]))
            out.append(Strategy(f"screen-halving-{signal}", "screen-halving", signal=signal, rungs=trained))
    return out


# ---------------------------------------------------------------------------- the spec and the space
def table_space(table: dict) -> dict:
    """The table's space: ``{layers, ffn, hidden, vocab, init}`` lists."""
    return table["fingerprint"]["settings"]["space"]


def replay_spec(table: dict, spec_path: str | None, overrides: list[str]):
    """The spec whose sampler proposes: ``spec_path`` (its space must be the table's), or, without one,
    ``specs/maltese.yaml`` with the table's space. Its ``max_params`` is dropped: the table's students
    are sized already, and the teacher's config is not at hand.

    Raises:
        UsageError: one line naming the space field where the spec and the table differ.
    """
    from search.spec import load_spec

    space = table_space(table)
    shown = spec_path or str(REPO / "specs" / "maltese.yaml")
    if spec_path is None:
        overrides = [f"space.{name}={json.dumps(values)}" for name, values in space.items()] + list(overrides)
    spec = load_spec(shown, [*overrides, "constraints.max_params=null"], check_teacher=False)
    for name, values in space.items():
        mine = sorted(str(v) for v in getattr(spec.space, name))
        if mine != sorted(str(v) for v in values):
            raise UsageError(f"{shown}: space.{name}: {mine} is not the table's {sorted(str(v) for v in values)}: "
                             "the table comes from another space")
    return spec


def row_label(row: dict) -> str:
    """The search's label of a table row's candidate (`search.space.label`)."""
    from pipeline.config import Candidate
    from search.space import label

    return label(Candidate(**row["candidate"]))


# ---------------------------------------------------------------------------- the simulated clock
class Clock:
    """CPU seconds spent so far; a stage build is paid the first time any trial needs it."""

    def __init__(self, table: dict) -> None:
        self.builds, self.rungs = table["builds"], sorted(int(r) for r in table["rungs"])
        self.paid: set[str] = set()
        self.spent = 0.0

    def build(self, row: dict, rung: int) -> None:
        """Build ``row``'s student up to ``rung``: its rung paths at that rung and below (a rung's
        distillation continues from the one below it)."""
        for r in self.rungs:
            if r <= rung:
                for key in row["rung_paths"].get(str(r), []):
                    if key not in self.paid:
                        self.paid.add(key)
                        self.spent += self.builds.get(key) or 0.0

    def pay(self, seconds: float) -> None:
        self.spent += seconds


@dataclasses.dataclass
class Run:
    """One replayed search: ``evaluated`` holds ``(clock, row)`` of each full evaluation, in order."""

    strategy: str
    seed: int
    evaluated: list[tuple[float, dict]]
    stopped: int
    spent: float


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def replay(table: dict, spec, strategy: Strategy, seed: int) -> Run:
    """Replay ``strategy`` once on ``table``, its sampler seeded with ``seed``; it ends when every
    candidate of the space has been proposed once."""
    from search.sampler import distributions
    from search.space import label, to_candidate

    rows = {row_label(r): r for r in space_students(table)}
    clock = Clock(table)
    run = Run(strategy.name, seed, [], 0, 0.0)
    scheduler = None if strategy.kind in ("full", "screen") else _scheduler(table, strategy)
    if strategy.kind.startswith("screen"):
        queue = _screened(table, list(rows.values()), strategy.signal, clock)
        study, queue = None, queue if strategy.kind == "screen" else queue[: math.ceil(len(queue) / REDUCTION_FACTOR)]
    else:
        study, queue = _study(spec, strategy.sampler, seed), None
    space = distributions(spec)
    for number in range(len(rows)):
        if queue is not None:
            if number >= len(queue):
                break
            trial, row = None, queue[number]
        else:
            trial = study.ask(space)
            row = rows[label(to_candidate(trial.params))]
        if scheduler is None or _climb(scheduler, clock, row, strategy, f"t{number}"):
            clock.build(row, strategy.rungs[-1])
            clock.pay(row["eval_cost_s"])
            run.evaluated.append((clock.spent, row))
            _tell(study, trial, spec, row)
        else:
            run.stopped += 1
            _tell(study, trial, spec, None)
    run.spent = clock.spent
    return run


def _climb(scheduler, clock: Clock, row: dict, strategy: Strategy, trial_id: str) -> bool:
    """Take ``row`` through the rungs below the top: build, score with the signal, ask the scheduler.
    True when it reaches the top rung."""
    from search.tuner import MultiObjectiveHalving

    for rung in strategy.rungs[:-1]:
        clock.build(row, rung)
        clock.pay(row["signal_cost_s"][strategy.signal][str(rung)])
        result = {"rung": rung, "signal": row["signals"][strategy.signal][str(rung)], "params": row["params"],
                  "feasible": 1}
        if scheduler.on_trial_result(None, _Trial(trial_id), result) == MultiObjectiveHalving.STOP:
            return False
    return True


def _scheduler(table: dict, strategy: Strategy):
    from search.tuner import MultiObjectiveHalving

    objectives = [("signal", table["signals"][strategy.signal]), ("params", "min")]
    return MultiObjectiveHalving(objectives, strategy.rungs, REDUCTION_FACTOR)


def _screened(table: dict, rows: list[dict], signal: str, clock: Clock) -> list[dict]:
    """Every row built to rung 0 and scored with ``signal`` there, in the order the search's screening
    gives them (`screening_order`)."""
    for row in rows:
        clock.build(row, 0)
        clock.pay(row["signal_cost_s"][signal]["0"])
    return screening_order(table, rows, signal)


def screening_order(table: dict, rows: list[dict], signal: str) -> list[dict]:
    """``rows`` in the order the search's screening gives them by ``signal`` at rung 0
    (`search.screening.ranked`)."""
    from search.screening import ranked

    records = [{"label": row["name"], "value": row["signals"][signal]["0"], "params": row["params"], "row": i}
               for i, row in enumerate(rows)]
    return [rows[r["row"]] for r in ranked(records, table["signals"][signal])]


def _study(spec, sampler: str, seed: int):
    import optuna

    from search.sampler import DistinctSampler, distributions, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler == "random":
        chosen = DistinctSampler(optuna.samplers.RandomSampler(seed=seed), distributions(spec), seed=seed)
    else:
        settings = spec.search.model_copy(update={"sampler": sampler, "seed": seed})
        chosen = make_sampler(spec.model_copy(update={"search": settings}), {})
    directions = ["maximize" if o.direction == "max" else "minimize" for o in spec.objectives]
    return optuna.create_study(directions=directions, sampler=chosen)


def _tell(study, trial, spec, row: dict | None) -> None:
    """Tell Optuna a trial's objectives (the full evaluation's), or that it stopped below the top rung."""
    if study is None:
        return
    import optuna

    if row is None:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    values = {"quality": quality(row), "params": row["params"]}
    study.tell(trial, [values[o.metric] for o in spec.objectives])


# ---------------------------------------------------------------------------- what a run found
class Measure:
    """Hypervolumes of fronts of the table's rows, against a fixed reference point: the random model's
    mean quality and the teacher's parameter count (both objectives minimised: minus quality, params)."""

    def __init__(self, table: dict) -> None:
        self.table = table
        self.reference = {split: (-quality(table["random"], split), float(table["teacher"]["params"]))
                          for split in ("dev", "test")}
        self.space = space_students(table)
        self.exhaustive_cost = cost_of(self.space, table["builds"])
        self.exhaustive_dev = self.hv(self.space, "dev")
        self.exhaustive_test = self.hv([r for r in self.space if r["name"] in dev_front(self.space)], "test")
        self.paper = paper_models(table)
        self.paper_cost = cost_of(self.paper, table["builds"])
        self.paper_test = self.hv(self.paper, "test")

    def hv(self, rows: list[dict], split: str) -> float:
        return hypervolume([(-quality(r, split), float(r["params"])) for r in rows], self.reference[split])

    def found(self, run: Run, budget: float) -> list[dict]:
        """The dev front of what ``run`` evaluated in full within ``budget`` CPU seconds."""
        rows = [row for clock, row in run.evaluated if clock <= budget]
        front = dev_front(rows)
        return [r for r in rows if r["name"] in front]

    def summary(self, run: Run) -> dict:
        """The cost (a fraction of the exhaustive cost) at which ``run`` first held ``TARGET`` of the
        exhaustive dev hypervolume (None: never), and its test hypervolume at 1x and 2x the paper path's
        cost (a fraction of the paper path's test hypervolume)."""
        reached = None
        for i, (clock, _) in enumerate(run.evaluated):
            if self.hv([row for _, row in run.evaluated[: i + 1]], "dev") >= TARGET * self.exhaustive_dev:
                reached = clock / self.exhaustive_cost
                break
        at = {f"{k}x": self.hv(self.found(run, k * self.paper_cost), "test") / self.paper_test for k in (1, 2)}
        dev = {f"{k}x": self.hv(self.found(run, k * self.paper_cost), "dev") / self.exhaustive_dev for k in (1, 2)}
        return {"seed": run.seed, "to_95": None if reached is None else round(reached, 4),
                "test_hv_vs_paper": {k: round(v, 4) for k, v in at.items()},
                "dev_hv_vs_exhaustive": {k: round(v, 4) for k, v in dev.items()},
                "evaluated": len(run.evaluated), "stopped": run.stopped, "spent": round(run.spent / self.exhaustive_cost, 4)}


def breakdown(table: dict, rows: list[dict]) -> dict:
    """Shares of the exhaustive cost: each stage's builds (each counted once; ``distill`` is the depth
    distillation, ``truncate@rung`` the last one at every rung) and the full evaluations; ``screen`` is
    what building every row to rung 0 costs, signals left out."""
    info, builds = table.get("build_info", {}), table["builds"]
    keys = {key for row in rows for path in row["rung_paths"].values() for key in path}
    total = cost_of(rows, builds)
    shares: dict[str, float] = {}
    for key in keys:
        stage = info.get(key, {}).get("stage", "unknown")
        shares[stage] = shares.get(stage, 0.0) + (builds.get(key) or 0.0)
    shares["evaluation"] = sum(row["eval_cost_s"] for row in rows)
    screen = sum(builds.get(k) or 0.0 for k in {k for row in rows for k in row["rung_paths"].get("0", [])})
    out = {stage: round(seconds / total, 4) for stage, seconds in sorted(shares.items())}
    return {**out, "screen": round(screen / total, 4)}


def _median(values: list[float | None]) -> float | None:
    """The median, a run that never reached counting as infinitely expensive (None when most never did)."""
    finite = sorted(math.inf if v is None else v for v in values)
    m = statistics.median(finite)
    return None if math.isinf(m) else round(m, 4)


def _range(values: list[float | None]) -> list[float | None]:
    return [None if v is None or math.isinf(v) else round(v, 4)
            for v in (min(math.inf if v is None else v for v in values), max(math.inf if v is None else v for v in values))]


def run_all(table: dict, spec, seeds: int, chosen: list[str] | None = None) -> dict:
    """Every strategy (or those ``chosen``) over ``seeds`` seeds, summarised."""
    measure = Measure(table)
    result = {"exhaustive_cost_s": round(measure.exhaustive_cost, 1), "paper_cost_s": round(measure.paper_cost, 1),
              "paper_cost_vs_exhaustive": round(measure.paper_cost / measure.exhaustive_cost, 4),
              "reference": measure.reference, "exhaustive_dev_hv": measure.exhaustive_dev,
              "exhaustive_test_hv_vs_paper": round(measure.exhaustive_test / measure.paper_test, 4),
              "students": len(measure.space), "seeds": seeds, "target": TARGET,
              "exhaustive_by_stage": breakdown(table, measure.space), "strategies": {}}
    runs: dict[str, list[Run]] = {}
    for strategy in strategies(table):
        if chosen and strategy.name not in chosen:
            continue
        started = time.process_time()
        runs[strategy.name] = [replay(table, spec, strategy, seed) for seed in range(seeds)]
        rows = [measure.summary(run) for run in runs[strategy.name]]
        result["strategies"][strategy.name] = {
            "kind": strategy.kind, "sampler": None if strategy.kind.startswith("screen") else strategy.sampler,
            "signal": strategy.signal, "rungs": list(strategy.rungs),
            "to_95_median": _median([r["to_95"] for r in rows]), "to_95_range": _range([r["to_95"] for r in rows]),
            "reached": sum(r["to_95"] is not None for r in rows),
            "test_hv_vs_paper_1x_median": round(statistics.median(r["test_hv_vs_paper"]["1x"] for r in rows), 4),
            "test_hv_vs_paper_1x_range": _range([r["test_hv_vs_paper"]["1x"] for r in rows]),
            "test_hv_vs_paper_2x_median": round(statistics.median(r["test_hv_vs_paper"]["2x"] for r in rows), 4),
            "test_hv_vs_paper_2x_range": _range([r["test_hv_vs_paper"]["2x"] for r in rows]),
            "dev_hv_2x_median": round(statistics.median(r["dev_hv_vs_exhaustive"]["2x"] for r in rows), 4),
            "dev_hv_2x_range": _range([r["dev_hv_vs_exhaustive"]["2x"] for r in rows]),
            "spent_median": round(statistics.median(r["spent"] for r in rows), 4),
            "replay_cpu_s": round(time.process_time() - started, 2), "runs": rows,
        }
    reached = {name: s["to_95_median"] for name, s in result["strategies"].items() if s["to_95_median"] is not None}
    result["default"] = min(reached, key=lambda name: (reached[name], name)) if reached else None
    # multi-fidelity's defaults (search.fidelity: signal, rung_zero): the halving strategy whose dev front
    # at twice the paper path's cost is largest, chosen on dev like every choice here
    halving = {name: s["dev_hv_2x_median"] for name, s in result["strategies"].items() if s["kind"] == "halving"}
    result["halving_default"] = max(halving, key=lambda name: (halving[name], name)) if halving else None
    if result["default"]:
        best = runs[result["default"]][_median_index([r["to_95"] for r in result["strategies"][result["default"]]["runs"]])]
        result["default_against_paper_2x"] = _against_paper(table, measure, best)
    return result


def _median_index(values: list[float | None]) -> int:
    order = sorted(range(len(values)), key=lambda i: math.inf if values[i] is None else values[i])
    return order[(len(order) - 1) // 2]


def _against_paper(table: dict, measure: Measure, run: Run) -> dict:
    """The default strategy's median run at twice the paper path's cost: for each paper model the best
    student it evaluated no larger than it (on dev) against the paper model on test, with paired intervals."""
    searched = [row for clock, row in run.evaluated if clock <= 2 * measure.paper_cost]
    rows = against_paper(table, Bootstrap(table), searched)
    return {"seed": run.seed, "searched": [r["name"] for r in searched], "rows": [
        {k: v for k, v in row.items() if k in ("paper", "params", "searched", "test")} for row in rows]}


def render(result: dict) -> str:
    lines = [f"{result['students']} students; exhaustive cost {result['exhaustive_cost_s']:,.0f} CPU s; paper path "
             f"{result['paper_cost_s']:,.0f} CPU s ({result['paper_cost_vs_exhaustive']:.2f} of it); {result['seeds']} seeds",
             "shares of the exhaustive cost: " + ", ".join(f"{k} {v:.3f}" for k, v in result["exhaustive_by_stage"].items()),
             "", "| strategy | cost to 95% of the exhaustive dev hypervolume (median [range], of exhaustive) | reached "
             "| dev HV / exhaustive at 2x the paper path's cost | test HV / paper path's at 1x its cost | at 2x | spent in all |",
             "|---|---|---|---|---|---|---|"]
    for name, s in result["strategies"].items():
        to = "never" if s["to_95_median"] is None else f"{s['to_95_median']:.3f}"
        low, high = s["to_95_range"]
        span = f"[{'never' if low is None else f'{low:.3f}'}, {'never' if high is None else f'{high:.3f}'}]"
        lines.append(f"| {name} | {to} {span} | {s['reached']}/{result['seeds']} | "
                     f"{s['dev_hv_2x_median']:.3f} [{s['dev_hv_2x_range'][0]:.3f}, {s['dev_hv_2x_range'][1]:.3f}] | "
                     f"{s['test_hv_vs_paper_1x_median']:.3f} [{s['test_hv_vs_paper_1x_range'][0]:.3f}, "
                     f"{s['test_hv_vs_paper_1x_range'][1]:.3f}] | {s['test_hv_vs_paper_2x_median']:.3f} "
                     f"[{s['test_hv_vs_paper_2x_range'][0]:.3f}, {s['test_hv_vs_paper_2x_range'][1]:.3f}] | "
                     f"{s['spent_median']:.3f} |")
    against = result.get("default_against_paper_2x")
    if against:
        lines += ["", f"{result['default']} (seed {against['seed']}) at 2x the paper path's cost, against each paper "
                      "model on test (mean over tasks, 95% paired bootstrap):"]
        for row in against["rows"]:
            if row.get("searched"):
                t = row["test"]["mean"]
                lines.append(f"  {row['searched']} - {row['paper']}: {t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}] "
                             f"{t['verdict']}")
            else:
                lines.append(f"  {row['paper']}: nothing evaluated no larger than it")
    if result.get("halving_default"):
        best = result["strategies"][result["halving_default"]]
        lines += ["", f"multi-fidelity: {result['halving_default']} holds the most of the exhaustive dev hypervolume at "
                      f"2x the paper path's cost: {best['dev_hv_2x_median']:.3f} (median; range {best['dev_hv_2x_range']})"]
    if result["default"]:
        lines += ["", f"default: {result['default']} reaches 95% of the exhaustive dev hypervolume at "
                      f"{result['strategies'][result['default']]['to_95_median']:.3f} of the exhaustive cost "
                      f"(median of {result['seeds']} seeds)"]
    else:
        lines += ["", "default: none: no strategy reaches 95% of the exhaustive dev hypervolume in most seeds"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, type=Path, help="a table of benchmarks/table.py")
    parser.add_argument("--spec", help="the spec whose sampler proposes (default: specs/maltese.yaml with the table's space)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a spec override")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--strategy", action="append", help="only these strategies (default: all)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("search.tuner").setLevel(logging.WARNING)
    try:
        table = read_table(args.table)
        if not isinstance(table.get("fingerprint", {}).get("settings", {}).get("space"), dict):
            raise UsageError(f"{args.table}: the table names no space (fingerprint.settings.space)")
        spec = replay_spec(table, args.spec, args.set)
        unknown = [o.metric for o in spec.objectives if o.metric not in ("quality", "params")]
        if unknown:
            raise UsageError(f"objectives: {unknown[0]}: the table holds only quality and params")
        names = {s.name for s in strategies(table)}
        for name in args.strategy or []:
            if name not in names:
                raise UsageError(f"--strategy {name}: not one of {', '.join(sorted(names))}")
        started = time.time()
        result = run_all(table, spec, args.seeds, args.strategy)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {**provenance(["benchmarks/replay.py", *(argv if argv is not None else sys.argv[1:])]),
              "table": str(args.table), "wall_s": round(time.time() - started, 1), **result}
    print(render(result))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
