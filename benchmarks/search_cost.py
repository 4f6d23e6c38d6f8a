"""What a search costs: the stage cache on and off, and multi-fidelity against full fidelity.

    python benchmarks/search_cost.py                       # the offline demo (synthetic language)
    python benchmarks/search_cost.py --setup maltese --candidates 6   # real Maltese, the Maltese benchmark's teacher
    python benchmarks/search_cost.py --quick               # tiny sizes, to try it
    ... --candidates 8                                     # only the first 8 candidates (shuffled by --seed)
    ... --parts cache halving --threads 1 & ... --parts full --threads 1   # side by side, one core each
    ... --join                                             # report the parts written so far, even if one is missing

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

Prints a table with the ratios and writes ``<out>/search-cost-<setup>-DATE.json`` (a new name when one exists)
with the command, commit, machine and date.
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

from provenance import fresh_path, provenance, write_json  # noqa: E402

log = logging.getLogger("search_cost")


def _context(spec_path: Path, overrides: list[str]):
    from search.prepare import prepare
    from search.spec import load_spec

    spec = load_spec(spec_path, overrides)
    context, reference = prepare(spec)
    return spec, context, reference


def _run(context, candidate, rung=None, full_scoring=False) -> tuple[dict, float, float]:
    """One trial: its outcome, wall seconds and CPU seconds of this process (every thread; the pipeline starts
    no processes). The CPU seconds stay fair when other processes share the cores."""
    from search.objective import evaluate_candidate

    started, cpu = time.perf_counter(), time.process_time()
    outcome = evaluate_candidate(context, candidate, rung=rung, full_scoring=full_scoring)
    return outcome, time.perf_counter() - started, time.process_time() - cpu


def _cost(runs: list[tuple[dict, float, float]]) -> dict:
    return {"seconds": sum(r[1] for r in runs), "cpu_seconds": sum(r[2] for r in runs),
            "steps": sum(_distilled(r[0]["result"]) for r in runs)}


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
    return {"trials": len(candidates), "on": _cost(on), "off": _cost(off)}


def _values(metrics, objectives) -> tuple[float, ...]:
    return tuple(float(metrics[m]) if d == "min" else -float(metrics[m]) for m, d in objectives)


def full_fidelity(context, candidates, rungs: tuple[int, ...], objectives, work: Path, run=_run) -> dict:
    """(b), one side: every candidate trained to the longest rung and scored in full."""
    full_ctx = dataclasses.replace(context, rungs=rungs, plan=dataclasses.replace(context.plan, cache_dir=str(work / "full")))
    full = [run(full_ctx, c, rung=rungs[-1]) for c in candidates]
    return {**_cost(full), "points": [_values(r[0]["metrics"], objectives) for r in full]}


def halving(context, candidates, rungs: tuple[int, ...], factor: int, objectives, work: Path, run=_run) -> dict:
    """(b), the other side: successive halving over the same candidates in the same order; with a cheaper
    rung evaluation, the front's members that stopped below the top rung are then scored again in full
    (as the search does when it ends, `search.driver.TrialBook.rescore_front`)."""
    from search.pareto import pareto_front, promoted

    halving_ctx = dataclasses.replace(context, rungs=rungs,
                                      plan=dataclasses.replace(context.plan, cache_dir=str(work / "halving")))
    results: dict[int, dict[int, tuple]] = {rung: {} for rung in rungs}
    stopped: dict[int, tuple] = {}  # candidate index -> (outcome, rung reached)
    trained = []
    for index, candidate in enumerate(candidates):
        for rung in rungs:
            trained.append(run(halving_ctx, candidate, rung=rung))
            outcome = trained[-1][0]
            results[rung][index] = _values(outcome["metrics"], objectives)
            if rung == rungs[-1] or not promoted(results[rung], index, factor):
                stopped[index] = (outcome, rung)
                break
    cheap_points = [_values(o["metrics"], objectives) for o, _ in stopped.values()]
    rescored, rescorings = [], []
    if context.plan.rung_evaluation is not None:
        while True:
            records = [{"id": str(i), "metrics": o["metrics"], "feasible": o["feasible"]} for i, (o, _) in stopped.items()]
            front = pareto_front(records, objectives)
            todo = [i for i in stopped if str(i) in front and stopped[i][1] < rungs[-1] and i not in rescored]
            if not todo:
                break
            for index in todo:
                rescorings.append(run(halving_ctx, candidates[index], rung=stopped[index][1], full_scoring=True))
                stopped[index] = (rescorings[-1][0], stopped[index][1])
                rescored.append(index)
    rescoring = _cost(rescorings)
    return {**_cost(trained + rescorings), "points": [_values(o["metrics"], objectives) for o, _ in stopped.values()],
            "rungs_reached": [r for _, r in stopped.values()], "cheap_points": cheap_points, "rescored": len(rescored),
            "rescore_seconds": rescoring["seconds"], "rescore_cpu_seconds": rescoring["cpu_seconds"]}


def report(setup: str, cache: dict | None, mf: dict | None, reference_point: tuple[float, float]) -> dict:
    """The table and the ratios of the comparisons that ran (``cache`` or ``mf`` None: that one did not)."""
    from search.pareto import hypervolume

    rows, ratios, hv = [], {}, {}
    if cache is not None:
        rows += [("(a) stage cache on", cache["on"], cache["trials"], ""),
                 ("(a) stage cache off", cache["off"], cache["trials"], "")]
        ratios.update({
            "cache_on_over_off_seconds": cache["on"]["seconds"] / cache["off"]["seconds"],
            "cache_on_over_off_cpu_seconds": cache["on"]["cpu_seconds"] / cache["off"]["cpu_seconds"],
            "cache_on_over_off_steps": cache["on"]["steps"] / max(1, cache["off"]["steps"]),
        })
    if mf is not None:
        half = mf["halving"]
        hv = {"full": hypervolume(mf["full"]["points"], reference_point),
              "halving": hypervolume(half["points"], reference_point),
              "before_rescoring": hypervolume(half["cheap_points"], reference_point), "reference": reference_point}
        before = {"seconds": half["seconds"] - half["rescore_seconds"],
                  "cpu_seconds": half["cpu_seconds"] - half["rescore_cpu_seconds"], "steps": half["steps"]}
        rows += [("(b) full fidelity", mf["full"], len(mf["full"]["points"]), f"{hv['full']:.4g}"),
                 ("(b) multi-fidelity, before rescoring", before, len(half["points"]), f"{hv['before_rescoring']:.4g}"),
                 (f"(b) multi-fidelity, {half['rescored']} front members rescored", half, len(half["points"]),
                  f"{hv['halving']:.4g}")]
        ratios.update({
            "fidelity_over_full_seconds": half["seconds"] / mf["full"]["seconds"],
            "fidelity_over_full_cpu_seconds": half["cpu_seconds"] / mf["full"]["cpu_seconds"],
            "fidelity_over_full_steps": half["steps"] / max(1, mf["full"]["steps"]),
            "hypervolume_ratio": hv["halving"] / hv["full"] if hv["full"] else float("nan"),
            "hypervolume_ratio_before_rescoring": hv["before_rescoring"] / hv["full"] if hv["full"] else float("nan"),
        })
    print(f"\n{setup}: | comparison | wall seconds | CPU seconds | distillation steps | trials | hypervolume (dev) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, cost, trials, volume in rows:
        print(f"| {name} | {cost['seconds']:.0f} | {cost['cpu_seconds']:.0f} | {cost['steps']:,} | {trials} | {volume} |")
    goals = {"cache_on_over_off_seconds": ("<=", 1 / 3), "cache_on_over_off_cpu_seconds": ("<=", 1 / 3),
             "fidelity_over_full_seconds": ("<=", 1 / 3), "fidelity_over_full_cpu_seconds": ("<=", 1 / 3),
             "hypervolume_ratio": (">=", 0.95)}
    for name, value in ratios.items():
        goal = goals.get(name)
        verdict = "" if goal is None else (" (goal %s %.2f: %s)" % (goal[0], goal[1], "met" if (
            value <= goal[1] if goal[0] == "<=" else value >= goal[1]) else "NOT met"))
        print(f"{name}: {value:.3f}{verdict}")
    return {"ratios": ratios, "hypervolume": hv}


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


PARTS = {"cache": "cache", "full": "fidelity/full", "halving": "fidelity/halving"}  # part -> its folder under runs/


def prepared(setup: str, work: Path, seed: int = 0, count: int | None = None):
    """The setup's spec, search context (its teacher prepared), teacher reference, the candidates in the
    order the comparisons take them (shuffled by ``seed``, the first ``count``), and the setting."""
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
                   # one seed, not the benchmark's two, and 2 trials for the cache: on one core a full trial
                   # (two 200-step distillations, adapters on 3 tasks) took 15-25 min on 2026-12-02
                   "overrides": ["evaluation.seeds=[1]",
                                 f"search.fidelity={{min_steps: {steps // 9}, max_steps: {steps}, reduction_factor: 3, "
                                 "rung_evaluation: {epochs: 2, max_train_examples: 300}}"],
                   "cache_trials": 2, "teacher_cache": base / "cache"}  # the Maltese benchmark's teacher, built once
    else:
        setting = SETUPS[setup]
    teacher_cache = setting.get("teacher_cache", work / "teacher-cache")
    spec, context, reference = _context(setting["spec"], [*setting["overrides"], f"search.cache_dir={teacher_cache}"])
    from search.space import candidates as all_candidates
    from search.spec import teacher_config

    config = teacher_config(spec)
    pool = all_candidates(spec, config)
    random.Random(seed).shuffle(pool)
    pool = pool[:count]
    return spec, context, reference, pool, setting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=["demo", "maltese", "quick"], default="demo")
    parser.add_argument("--quick", action="store_true", help="the same as --setup quick")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the order of the candidates")
    parser.add_argument("--candidates", type=int, default=None,
                        help="compare only the first N candidates of the shuffled space (default: all)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="run these parts only (default: all); processes that run the other parts can share "
                             "the machine (give each --threads 1), and the one that ends last writes the joint result")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--join", action="store_true",
                        help="run nothing: report the parts that processes of this setup (and the same options) "
                             "wrote to --out today, even when one is missing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    setup = "quick" if args.quick else args.setup
    work = (args.work or REPO / "benchmarks" / "work" / f"search-cost-{setup}").resolve()
    parts = [p for p in PARTS if p in args.parts]
    label = "-".join(parts)
    runs = work / "runs"
    for part in [] if args.join else parts:
        shutil.rmtree(runs / PARTS[part], ignore_errors=True)
    if not args.join:
        shutil.rmtree(runs / f"warm-up-{label}", ignore_errors=True)
    spec, context, reference, pool, setting = prepared(setup, work, args.seed, args.candidates)
    factor = spec.search.fidelity.reduction_factor
    result = {"setup": setup, "date": time.strftime("%Y-%m-%d"), "rungs": context.rungs, "factor": factor,
              "candidates": len(pool), "seed": args.seed, "threads": args.threads,
              "rung_evaluation": spec.search.fidelity.model_dump()["rung_evaluation"]}
    objectives = [("quality", "max"), ("params", "min")]
    if args.join:
        joint = _joined(args.out, setup, {**result, "seconds": 0, "parts": {}}, complete=False)
        if joint is None:
            print(f"no parts of this {setup} run in {args.out}", file=sys.stderr)
            return 1
        return _write(args.out, setup, *joint, reference)
    # untimed: the first trial of a process also pays for imports and first-use setup (at the lowest rung)
    warm_up = runs / f"warm-up-{label}"
    _run(dataclasses.replace(context, plan=dataclasses.replace(context.plan, cache_dir=str(warm_up))), pool[0],
         rung=context.rungs[0])
    started = time.time()
    pieces: dict[str, dict] = {}
    for part in parts:
        begun = time.strftime("%H:%M:%S")
        if part == "cache":
            pieces[part] = cache_on_off(context, pool[: setting["cache_trials"]], runs / PARTS[part])
        elif part == "full":
            pieces[part] = full_fidelity(context, pool, context.rungs, objectives, runs / "fidelity")
        else:
            pieces[part] = halving(context, pool, context.rungs, factor, objectives, runs / "fidelity")
        pieces[part]["clock"] = [begun, time.strftime("%H:%M:%S")]
    result["seconds"] = round(time.time() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    if parts != list(PARTS):
        mine = args.out / f"search-cost-{setup}-{label}.json"
        mine.write_text(json.dumps({**result, "parts": pieces}, indent=1), encoding="utf-8")
        print(f"{setup}, {label}: {result['seconds']} s")
        joint = _joined(args.out, setup, {**result, "parts": pieces})
        if joint is None:
            return 0
        result, pieces = joint
    return _write(args.out, setup, result, pieces, reference)


def _write(out: Path, setup: str, result: dict, pieces: dict, reference: dict) -> int:
    mf = {"full": pieces["full"], "halving": pieces["halving"]} if {"full", "halving"} <= set(pieces) else None
    summary = report(setup, pieces.get("cache"), mf, (0.0, float(reference["params"])))
    result.update(cache=pieces.get("cache"), fidelity=mf, **summary)
    path = fresh_path(out, f"search-cost-{setup}")  # a result RESULTS.md cites is never written over
    write_json(path, {**provenance(["benchmarks/search_cost.py", *sys.argv[1:]]), **result})
    print(f"{setup}: {result['seconds']} s in all; wrote {path}")
    return 0


def _joined(out: Path, setup: str, mine: dict, complete: bool = True) -> tuple[dict, dict] | None:
    """The parts of one comparison that separate processes ran side by side, once all of them have ended
    (``complete``; else those there are); None while one is missing (or none is there). Part files from
    another run (other setup, date, candidates...) are not joined."""
    same = ("setup", "date", "rungs", "factor", "candidates", "seed", "rung_evaluation")
    result, pieces = dict(mine), {}
    for path in sorted(out.glob(f"search-cost-{setup}-*.json")):
        theirs = json.loads(path.read_text(encoding="utf-8"))
        if "parts" not in theirs:  # a joint result, or search_cost_prefix.py's
            continue
        if any(json.dumps(mine.get(k)) != json.dumps(theirs.get(k)) for k in same):  # tuples and lists alike
            log.info("%s is from another run (it differs in one of %s); not joined", path, ", ".join(same))
            continue
        pieces.update(theirs["parts"])
        result["seconds"] = max(result["seconds"], theirs["seconds"])  # side by side: the longest is the wall time
    missing = set(PARTS) - set(pieces)
    if (complete and missing) or not pieces:
        return None
    result.pop("parts")
    result["side_by_side"] = True
    return result, pieces


if __name__ == "__main__":
    sys.exit(main())
