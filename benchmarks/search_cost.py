"""What a search costs: the stage cache on and off, and multi-fidelity against full fidelity.

    python benchmarks/search_cost.py                       # the offline demo (synthetic language)
    python benchmarks/search_cost.py --setup maltese       # real Maltese, the Maltese benchmark's teacher
    python benchmarks/search_cost.py --quick               # tiny sizes, to try it
    ... --candidates 8                                     # only the first 8 candidates (shuffled by --seed)

Both comparisons run the trials one after another through `search.objective.evaluate_candidate`,
the objective every Ray trial calls, so Ray's scheduling adds no noise to the timings:

(a) **stage cache**: the same trials once with the shared stage cache (as a search runs them) and
    once with a fresh cache each (nothing shared). Goal: with the cache at most 1/3 of the cost.
(b) **multi-fidelity**: every candidate of the space trained in full, against asynchronous successive
    halving over the same candidates in the same order with the scheduler's own rule
    (`search.pareto.promoted`: a trial goes on past a rung only among the best 1/reduction_factor of
    those that reached it). The setup's ``search.fidelity`` gives the rungs and the cheaper scoring
    below the top rung (``rung_evaluation``); the halving front's members scored that way are then
    scored again in full, as the search does when it ends (their cost is counted, and the front's
    hypervolume is shown before and after). Goal: at most 1/3 of the cost, and a front (dev
    scores: quality up, parameters down) whose hypervolume against one fixed reference point is at
    least 95% of full fidelity's. The reference point: quality 0 and the teacher's parameter count.

Prints a table with the ratios and writes ``<out>/search-cost-<setup>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

log = logging.getLogger("search_cost")


def _context(spec_path: Path, overrides: list[str]):
    from search.prepare import prepare
    from search.spec import load_spec

    spec = load_spec(spec_path, overrides)
    context, reference = prepare(spec)
    return spec, context, reference


def _run(context, candidate, rung=None, full_scoring=False) -> tuple[dict, float]:
    from search.objective import evaluate_candidate

    started = time.perf_counter()
    outcome = evaluate_candidate(context, candidate, rung=rung, full_scoring=full_scoring)
    return outcome, time.perf_counter() - started


def _distilled(result: dict, built_only: bool = True) -> int:
    """Distillation steps trained for this result (cached stages cost nothing again)."""
    total = 0
    for stage, metrics in (result.get("stages") or {}).items():
        if stage in ("distill", "truncate") and not (built_only and stage in result.get("cached", [])):
            total += (metrics.get("stop_at") or metrics.get("steps") or 0) - (metrics.get("resumed_from") or 0)
    return total


def cache_on_off(context, candidates, work: Path) -> dict:
    """(a): the same trials with one shared cache, and with a fresh cache for each."""
    shared = dataclasses.replace(context, plan=dataclasses.replace(context.plan, cache_dir=str(work / "shared")))
    on = [_run(shared, c) for c in candidates]
    off = []
    for i, candidate in enumerate(candidates):
        alone = dataclasses.replace(context, plan=dataclasses.replace(context.plan, cache_dir=str(work / f"alone-{i}")))
        off.append(_run(alone, candidate))
    return {
        "trials": len(candidates),
        "on": {"seconds": sum(s for _, s in on), "steps": sum(_distilled(o["result"]) for o, _ in on)},
        "off": {"seconds": sum(s for _, s in off), "steps": sum(_distilled(o["result"]) for o, _ in off)},
    }


def fidelity(context, candidates, rungs: tuple[int, ...], factor: int, objectives, work: Path) -> dict:
    """(b): every candidate at the longest rung, and successive halving over the same candidates; with a
    cheaper rung evaluation, the halving front's members that stopped below the top rung are then scored
    again in full (as the search does when it ends, `search.driver.TrialBook.rescore_front`)."""
    from search.pareto import pareto_front, promoted

    def values(metrics):
        return tuple(float(metrics[m]) if d == "min" else -float(metrics[m]) for m, d in objectives)

    full_ctx = dataclasses.replace(context, rungs=rungs, plan=dataclasses.replace(context.plan, cache_dir=str(work / "full")))
    full = [(c, *_run(full_ctx, c, rung=rungs[-1])) for c in candidates]
    halving_ctx = dataclasses.replace(context, rungs=rungs,
                                      plan=dataclasses.replace(context.plan, cache_dir=str(work / "halving")))
    results: dict[int, dict[int, tuple]] = {rung: {} for rung in rungs}
    stopped: dict[int, tuple] = {}  # candidate index -> (outcome, rung reached)
    seconds, steps = 0.0, 0
    for index, candidate in enumerate(candidates):
        for rung in rungs:
            outcome, spent = _run(halving_ctx, candidate, rung=rung)
            seconds += spent
            steps += _distilled(outcome["result"])
            results[rung][index] = values(outcome["metrics"])
            if rung == rungs[-1] or not promoted(results[rung], index, factor):
                stopped[index] = (outcome, rung)
                break
    cheap_points = [values(o["metrics"]) for o, _ in stopped.values()]
    rescored, rescore_seconds = [], 0.0
    if context.plan.rung_evaluation is not None:
        while True:
            records = [{"id": str(i), "metrics": o["metrics"], "feasible": o["feasible"]} for i, (o, _) in stopped.items()]
            front = pareto_front(records, objectives)
            todo = [i for i in stopped if str(i) in front and stopped[i][1] < rungs[-1] and i not in rescored]
            if not todo:
                break
            for index in todo:
                outcome, spent = _run(halving_ctx, candidates[index], rung=stopped[index][1], full_scoring=True)
                rescore_seconds += spent
                stopped[index] = (outcome, stopped[index][1])
                rescored.append(index)
    return {
        "full": {"seconds": sum(s for _, _, s in full), "steps": sum(_distilled(o["result"]) for _, o, _ in full),
                 "points": [values(o["metrics"]) for _, o, _ in full]},
        "halving": {"seconds": seconds + rescore_seconds, "steps": steps,
                    "points": [values(o["metrics"]) for o, _ in stopped.values()],
                    "rungs_reached": [r for _, r in stopped.values()],
                    "cheap_points": cheap_points, "rescored": len(rescored), "rescore_seconds": rescore_seconds},
    }


def report(setup: str, cache: dict, mf: dict, reference_point: tuple[float, float]) -> dict:
    from search.pareto import hypervolume

    hv_full = hypervolume(mf["full"]["points"], reference_point)
    hv_half = hypervolume(mf["halving"]["points"], reference_point)
    hv_cheap = hypervolume(mf["halving"]["cheap_points"], reference_point)
    half = mf["halving"]
    rows = [
        ("(a) stage cache on", cache["on"]["seconds"], cache["on"]["steps"], cache["trials"], ""),
        ("(a) stage cache off", cache["off"]["seconds"], cache["off"]["steps"], cache["trials"], ""),
        ("(b) full fidelity", mf["full"]["seconds"], mf["full"]["steps"], len(mf["full"]["points"]), f"{hv_full:.4g}"),
        ("(b) multi-fidelity, before rescoring", half["seconds"] - half["rescore_seconds"], half["steps"],
         len(half["points"]), f"{hv_cheap:.4g}"),
        (f"(b) multi-fidelity, {half['rescored']} front members rescored", half["seconds"], half["steps"],
         len(half["points"]), f"{hv_half:.4g}"),
    ]
    print(f"\n{setup}: | comparison | seconds | distillation steps | trials | hypervolume (dev) |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, steps, trials, hv in rows:
        print(f"| {name} | {seconds:.0f} | {steps:,} | {trials} | {hv} |")
    ratios = {
        "cache_on_over_off_seconds": cache["on"]["seconds"] / cache["off"]["seconds"],
        "cache_on_over_off_steps": cache["on"]["steps"] / max(1, cache["off"]["steps"]),
        "fidelity_over_full_seconds": mf["halving"]["seconds"] / mf["full"]["seconds"],
        "fidelity_over_full_steps": mf["halving"]["steps"] / max(1, mf["full"]["steps"]),
        "hypervolume_ratio": hv_half / hv_full if hv_full else float("nan"),
        "hypervolume_ratio_before_rescoring": hv_cheap / hv_full if hv_full else float("nan"),
    }
    goals = {"cache_on_over_off_seconds": ("<=", 1 / 3), "fidelity_over_full_seconds": ("<=", 1 / 3),
             "hypervolume_ratio": (">=", 0.95)}
    for name, value in ratios.items():
        goal = goals.get(name)
        verdict = "" if goal is None else (" (goal %s %.2f: %s)" % (goal[0], goal[1], "met" if (
            value <= goal[1] if goal[0] == "<=" else value >= goal[1]) else "NOT met"))
        print(f"{name}: {value:.3f}{verdict}")
    return {"ratios": ratios, "hypervolume": {"full": hv_full, "halving": hv_half, "before_rescoring": hv_cheap,
                                              "reference": reference_point}}


SETUPS = {
    "demo": {
        "spec": REPO / "specs" / "demo.yaml",
        "overrides": ["distill.steps=240", "distill.eval_every=60", "truncate.distill.steps=240",
                      "truncate.distill.eval_every=60",
                      "search.fidelity={min_steps: 30, max_steps: 240, reduction_factor: 3, "
                      "rung_evaluation: {epochs: 2, max_train_examples: 200}}"],
        "cache_trials": 8,
    },
    "quick": {
        "spec": REPO / "specs" / "demo.yaml",
        "overrides": ["distill.steps=12", "distill.eval_every=6", "truncate.distill.steps=12", "truncate.distill.eval_every=6",
                      "space.layers=[2]", "space.vocab=[full]", "evaluation.pos.epochs=1", "evaluation.topic.epochs=1",
                      "evaluation.ner.epochs=1", "evaluation.sentiment.epochs=1",
                      "search.fidelity={min_steps: 3, max_steps: 12, reduction_factor: 2, "
                      "rung_evaluation: {max_train_examples: 32}}"],
        "cache_trials": 3,
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=["demo", "maltese", "quick"], default="demo")
    parser.add_argument("--quick", action="store_true", help="the same as --setup quick")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the order of the candidates")
    parser.add_argument("--candidates", type=int, default=None,
                        help="compare only the first N candidates of the shuffled space (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    setup = "quick" if args.quick else args.setup
    work = (args.work or REPO / "benchmarks" / "work" / f"search-cost-{setup}").resolve()
    shutil.rmtree(work / "runs", ignore_errors=True)
    if setup == "maltese":
        from maltese import SCALES, write_spec
        from maltese_data import prepare_text

        scale = SCALES["cpu"]
        data = Path(os.environ.get("LRL_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
        base = REPO / "benchmarks" / "work" / "maltese-cpu"
        text = base / "text"
        prepare_text(data, text)
        from maltese import search_space

        steps = scale.distill.steps
        setting = {"spec": write_spec(scale, base, text, data, space=search_space(scale), distill_steps=steps,
                                      samples=8),
                   "overrides": [f"search.fidelity={{min_steps: {steps // 9}, max_steps: {steps}, reduction_factor: 3, "
                                 "rung_evaluation: {seeds: 1, epochs: 2, max_train_examples: 300}}"],
                   "cache_trials": 3, "teacher_cache": base / "cache"}  # the Maltese benchmark's teacher, built once
    else:
        setting = SETUPS[setup]
    teacher_cache = setting.get("teacher_cache", work / "teacher-cache")
    spec, context, reference = _context(setting["spec"], [*setting["overrides"], f"search.cache_dir={teacher_cache}"])
    from search.space import candidates as all_candidates
    from search.spec import teacher_config

    config = teacher_config(spec)
    pool = all_candidates(spec, config)
    random.Random(args.seed).shuffle(pool)
    pool = pool[: args.candidates]
    runs = work / "runs"
    # untimed: the first trial of a process also pays for imports and first-use setup (at the lowest rung)
    _run(dataclasses.replace(context, plan=dataclasses.replace(context.plan, cache_dir=str(runs / "warm-up"))), pool[0],
         rung=context.rungs[0])
    started = time.time()
    cache = cache_on_off(context, pool[: setting["cache_trials"]], runs / "cache")
    objectives = [("quality", "max"), ("params", "min")]
    factor = spec.search.fidelity.reduction_factor
    mf = fidelity(context, pool, context.rungs, factor, objectives, runs / "fidelity")
    summary = report(setup, cache, mf, (0.0, float(reference["params"])))
    result = {"setup": setup, "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started),
              "rungs": context.rungs, "factor": factor, "candidates": len(pool), "cache": cache,
              "rung_evaluation": spec.search.fidelity.model_dump()["rung_evaluation"],
              "fidelity": mf, **summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"search-cost-{setup}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{setup}: {result['seconds']} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
