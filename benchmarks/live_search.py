"""A live search of the Maltese table's space, run once through the service, set against the replay.

    python benchmarks/live_search.py --table benchmarks/results/maltese-table-cpu.json --data ../shared/data \\
        --replay benchmarks/results/replay-maltese-table-2026-12-04.json --out live.json
    python benchmarks/live_search.py --table TABLE --replay REPLAY --summary live.json --out live.json

The replay (`replay.py`) says what a strategy would cost and find from the table's measurements; this
runs the strategy for real. The search is `search.driver.search` on the table's own spec (its teacher,
stage settings, evaluation protocol and space, `table.spec_file`), with ``search.screen`` by the
replay's signal (``--signal``, default ``capped`` with the table's rung evaluation and signal settings)
and no multi-fidelity: every candidate is built to rung 0 and scored, then ``--samples`` trials train
and evaluate in full, best first, two at a time on one core each, as the table was built.

The teacher is built (or found in ``--work``'s stage cache) before the search and is not counted, as in
the replay. Every cost comes from the search's own records, never from its log: the screening record
(``screening.json``: each candidate's build and signal CPU seconds) and each trial's ``cpu_s`` metric
(the CPU seconds its process spent; a build found in the stage cache costs nothing). Trials are counted
in the order they finished. Hypervolumes use the replay's reference point and exhaustive front
(`replay.Measure`), so the figures compare with the replay's: the cost to reach 95% of the exhaustive dev
hypervolume (a fraction of the exhaustive cost), the dev hypervolume at the end, and the test
hypervolume at the paper path's cost and at twice it. Two clocks: the live one (what the search
measured) and the table's (the same builds and evaluations priced at what the table measured, once:
the replay's unit, `replay.Clock`), since timings differ between the table's run and this one. Each trial's dev and test
scores are also set beside the table's for the same candidate. ``--summary`` computes the figures
again from an earlier run's JSON, without searching.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import analyse_table  # noqa: E402
import replay  # noqa: E402
import table as tables  # noqa: E402
from maltese_data import prepare_text  # noqa: E402
from provenance import provenance, write_json  # noqa: E402

from pipeline.errors import UsageError  # noqa: E402


def live_spec(table: dict, setup, work: Path, data: Path, signal: str, samples: int):
    """The table's spec as a screened search of ``samples`` trials in full, its folders under ``work``."""
    import yaml

    from search.spec import load_spec

    evaluation, steps = tables.chosen_protocol(table, setup)
    path = tables.spec_file(setup, work, data, evaluation, steps)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    search = spec["search"]
    search.pop("fidelity", None)  # the replay's screen strategy trains every trial in full
    search.update(num_samples=samples, max_concurrent=2, resources={"cpu": 1},
                  screen={"signal": signal, "evaluation": setup.rung_evaluation,
                          "settings": dataclasses.asdict(setup.signals)})
    live = work / "live-spec.yaml"
    live.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return load_spec(live)


def table_rows(table: dict) -> dict[str, dict]:
    """The table's students of its space by the search's label of their candidate."""
    return {replay.row_label(row): row for row in analyse_table.space_students(table)}


def live_trials(table: dict, records: list[dict]) -> list[dict]:
    """The search's finished trials in the order they finished: label, parameters, the CPU seconds the
    trial's process spent (its ``cpu_s`` metric), dev and test quality (means over the tasks)."""
    from pipeline.config import Candidate
    from search.space import label

    tasks = analyse_table.tasks_of(table)
    out = []
    for record in records:
        if record["failed"]:
            continue
        metrics = record["metrics"]
        out.append({"trial": record["id"], "name": label(Candidate(**record["params"])), "params": int(metrics["params"]),
                    "cpu_s": metrics.get("cpu_s", 0.0), "dev": statistics.fmean(metrics[t] for t in tasks),
                    "test": statistics.fmean(metrics[f"test_{t}"] for t in tasks)})
    return out


def summarise(table: dict, screened: dict[str, float | None], screening_cpu_s: float, trials: list[dict],
              replayed: dict | None, signal: str) -> dict:
    """The live search set against the table and the replay.

    Args:
        screened: each screened candidate's signal, in the screening's order (best first).
        screening_cpu_s: what screening cost, as the search measured it.
        trials: `live_trials`.

    Two clocks: the live one (the CPU seconds the search measured) and the table's (each build and
    evaluation the live search made, priced at what the table measured, once: `replay.Clock`, the
    replay's unit). Costs are fractions of the exhaustive cost, which only the table's clock knows.
    When every screened candidate was trained, ``own_front`` asks the replay's question of the live
    search's own exhaustive front: the cost to reach 95% of its dev hypervolume.
    """
    measure = replay.Measure(table)
    known = table_rows(table)
    top = max(int(r) for r in table["rungs"])
    clock = replay.Clock(table)
    for name in screened:
        clock.build(known[name], 0)
        clock.pay(known[name]["signal_cost_s"][signal]["0"])
    table_screening = clock.spent
    live = screening_cpu_s
    rows, table_clock, live_clock = [], [], []
    for trial in trials:
        row = known[trial["name"]]
        clock.build(row, top)
        clock.pay(row["eval_cost_s"])
        live += trial["cpu_s"] or 0.0
        table_clock.append(clock.spent)
        live_clock.append(live)
        rows.append({"name": trial["name"], "params": trial["params"], "dev": {"mean": trial["dev"]},
                     "test": {"mean": trial["test"]}})
        trial.update(table_dev=round(analyse_table.quality(row), 4), table_test=round(analyse_table.quality(row, "test"), 4),
                     clock_s=round(live, 1), table_clock_s=round(clock.spent, 1))

    def reached(clocks: list[float], target: float = measure.exhaustive_dev) -> float | None:
        for i, spent in enumerate(clocks):
            if measure.hv(rows[: i + 1], "dev") >= replay.TARGET * target:
                return round(spent / measure.exhaustive_cost, 4)
        return None

    def test_hv_at(budget: float) -> float:
        found = [r for spent, r in zip(table_clock, rows) if spent <= budget]
        front = analyse_table.dev_front(found)
        return round(measure.hv([r for r in found if r["name"] in front], "test") / measure.paper_test, 4)

    order = list(screened)
    table_order = [replay.row_label(r) for r in replay.screening_order(table, analyse_table.space_students(table), signal)]
    same = [abs(t["dev"] - t["table_dev"]) for t in trials]
    result = {
        "signal": signal, "trials": len(rows), "screened": len(order),
        "exhaustive_cost_s": round(measure.exhaustive_cost, 1),
        "table_clock": {"screening_vs_exhaustive": round(table_screening / measure.exhaustive_cost, 4),
                        "spent_vs_exhaustive": round((table_clock or [table_screening])[-1] / measure.exhaustive_cost, 4),
                        "to_95": reached(table_clock)},
        "live_clock": {"screening_cpu_s": round(screening_cpu_s, 1), "spent_cpu_s": round(live, 1),
                       "vs_table_clock": round(live / (table_clock or [table_screening])[-1], 4),
                       "to_95_in_table_units": reached([c * (table_clock[-1] / live) for c in live_clock]) if rows else None},
        "dev_hv_vs_exhaustive": round(measure.hv(rows, "dev") / measure.exhaustive_dev, 4) if rows else 0.0,
        "test_hv_vs_paper": {f"{k}x": test_hv_at(k * measure.paper_cost) for k in (1, 2)},
        "screening_order": order, "table_order": table_order, "screening_values": screened,
        "table_signal_values": {name: row["signals"][signal]["0"] for name, row in known.items()},
        "rank_agreement": _kendall(order, table_order),
        "dev_abs_diff_vs_table": {"mean": round(statistics.fmean(same), 4), "max": round(max(same), 4)} if same else None,
        "trial_rows": trials,
    }
    if rows and {t["name"] for t in trials} == set(order):
        # every candidate trained live: the live exhaustive front, the replay's question asked of it
        own = measure.hv(rows, "dev")
        result["own_front"] = {"dev_hv_vs_table_exhaustive": round(own / measure.exhaustive_dev, 4),
                               "to_95": reached(table_clock, own),
                               "members": sorted(analyse_table.dev_front(rows))}
    if replayed:
        strategy = replayed["strategies"].get(f"screen-{signal}")
        if strategy:
            result["replay"] = {k: strategy[k] for k in ("to_95_median", "to_95_range", "test_hv_vs_paper_1x_range",
                                                         "test_hv_vs_paper_2x_range")}
    return result


def _kendall(a: list[str], b: list[str]) -> float | None:
    """Kendall's tau between two orders of the same names (None when they share fewer than two)."""
    from scipy.stats import kendalltau

    common = [n for n in a if n in set(b)]
    if len(common) < 2:
        return None
    return round(float(kendalltau([a.index(n) for n in common], [b.index(n) for n in common]).statistic), 4)


def render(result: dict) -> str:
    t, live = result["table_clock"], result["live_clock"]
    lines = [f"live search, screened by {result['signal']}: {result['screened']} candidates, then {result['trials']} trials "
             f"in full, best first",
             f"the live clock: screening {live['screening_cpu_s']:,.0f} CPU s, {live['spent_cpu_s']:,.0f} CPU s in all, "
             f"{live['vs_table_clock']:.2f} of what the table's measurements price the same work at",
             f"screening order against the replay's (Kendall tau): {result['rank_agreement']}"]
    if result["dev_abs_diff_vs_table"]:
        d = result["dev_abs_diff_vs_table"]
        lines.append(f"trials' dev quality against the table's for the same candidate: mean |diff| {d['mean']:.4f}, "
                     f"max {d['max']:.4f}")
    lines += ["", "| # | student | params | CPU s | live clock | table clock | dev | table dev | test | table test |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(result["trial_rows"], 1):
        lines.append(f"| {i} | {r['name']} | {r['params']:,} | {r['cpu_s']:,.0f} | {r['clock_s']:,.0f} | {r['table_clock_s']:,.0f} | "
                     f"{r['dev']:.4f} | {r['table_dev']:.4f} | {r['test']:.4f} | {r['table_test']:.4f} |")

    def at(value: float | None) -> str:
        return "never" if value is None else f"{value:.3f}"

    lines += ["", f"live, on the table's clock: screening {t['screening_vs_exhaustive']:.3f} of the exhaustive cost; 95% of "
                  f"the exhaustive dev hypervolume at {at(t['to_95'])} ({at(live['to_95_in_table_units'])} on the live "
                  f"clock scaled to the same total); dev hypervolume at the end {result['dev_hv_vs_exhaustive']:.3f} of "
                  f"the exhaustive; test hypervolume against the paper path's at 1x its cost "
                  f"{result['test_hv_vs_paper']['1x']:.3f}, at 2x {result['test_hv_vs_paper']['2x']:.3f}"]
    if "own_front" in result:
        own = result["own_front"]
        lines.append(f"every candidate trained live: its own dev front holds {own['dev_hv_vs_table_exhaustive']:.3f} of the "
                     f"table's exhaustive dev hypervolume; 95% of its own at {at(own['to_95'])} of the exhaustive cost "
                     f"(the table's clock)")
    if "replay" in result:
        r = result["replay"]
        lines.append(f"replay of screen-{result['signal']}: 95% at {r['to_95_median']} (range {r['to_95_range']}); test "
                     f"hypervolume at 1x {r['test_hv_vs_paper_1x_range']}, at 2x {r['test_hv_vs_paper_2x_range']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, type=Path, help="a table of benchmarks/table.py")
    parser.add_argument("--data", type=Path, help="the shared data folder (the one holding mt/); needed to search")
    parser.add_argument("--replay", type=Path, help="the replay's JSON, to set the live figures beside")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/live-search"),
                        help="the search's folders and stage cache (default benchmarks/work/live-search)")
    parser.add_argument("--signal", default="capped", choices=("capped", "probe", "mlm"))
    parser.add_argument("--samples", type=int, default=8, help="trials in full after screening (default 8)")
    parser.add_argument("--scale", default="cpu", choices=("quick", "cpu"), help="the table's setup")
    parser.add_argument("--out", type=Path, help="also write the result as JSON")
    parser.add_argument("--summary", type=Path, help="summarise an earlier run's JSON again instead of searching")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        setup = tables.setup_named(args.scale)
        table = tables.load_table(args.table, setup)
        if table is None:
            raise UsageError(f"{args.table}: no such table")
        replayed = json.loads(args.replay.read_text(encoding="utf-8")) if args.replay else None
        work = args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
        if args.summary:
            earlier = json.loads(args.summary.read_text(encoding="utf-8"))
        else:
            if args.data is None:
                raise UsageError("--data: give the shared data folder (the one holding mt/) to search")
            if not (work / "text" / "corpus.txt").is_file():
                prepare_text(args.data.resolve(), work / "text")
            spec = live_spec(table, setup, work, args.data.resolve(), args.signal, args.samples)
    except (UsageError, OSError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.summary:  # the figures again from an earlier run's file, without searching
        trials = [{k: t[k] for k in ("trial", "name", "params", "cpu_s", "dev", "test")} for t in earlier["trial_rows"]]
        cpu_s = earlier.get("live_clock", {}).get("screening_cpu_s", earlier.get("screening_cpu_s"))
        result = summarise(table, earlier["screening_values"], cpu_s, trials, replayed, earlier["signal"])
        kept = ("command", "commit", "dirty", "machine", "date", "table", "teacher_wall_s", "search_wall_s", "teacher", "wall_s")
        result = {**{k: earlier[k] for k in kept if k in earlier},
                  "summarised": provenance(["benchmarks/live_search.py", *(argv if argv is not None else sys.argv[1:])]),
                  **result}
    else:
        from search.driver import search
        from search.prepare import prepare
        from search.screening import SCREEN_FILE, read_screening

        started = time.time()
        t = time.time()
        _, reference = prepare(spec)  # the teacher and its reference, outside the search's clock (cached for it)
        teacher_s = time.time() - t
        outcome = search(spec)
        folder = Path(spec.search.storage_path) / outcome.name
        screening = list(read_screening(folder / SCREEN_FILE, args.signal).values())
        cpu_s = sum((r.get("build_cpu_s") or 0.0) + (r.get("signal_cpu_s") or 0.0) for r in screening)
        result = summarise(table, {r["label"]: r.get("value") for r in screening}, cpu_s,
                           live_trials(table, outcome.records), replayed, args.signal)
        result = {**provenance(["benchmarks/live_search.py", *(argv if argv is not None else sys.argv[1:])]),
                  "table": str(args.table), "teacher_wall_s": round(teacher_s, 1),
                  "search_wall_s": round(outcome.seconds, 1),
                  "teacher": {"dev": round(reference["quality"], 4),
                              "table_dev": round(analyse_table.quality(table["teacher"]), 4)},
                  "wall_s": round(time.time() - started, 1), **result}
    print(render(result))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
