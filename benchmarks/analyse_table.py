"""Every claim of the Maltese table, with its confidence interval, computed from the table file alone.

    python benchmarks/analyse_table.py benchmarks/results/maltese-table-cpu.json
    python benchmarks/analyse_table.py TABLE --signal probe --rung 25     # one signal at one rung
    python benchmarks/analyse_table.py TABLE --out analysis.json         # the numbers as JSON too
    python benchmarks/analyse_table.py TABLE --against EARLIER_TABLE     # a rebuild: how far it moved, what repeats

No model is loaded and nothing is trained: the table holds per-example counts of every full evaluation
(`pipeline.metrics.example_stats`), so any score can be recomputed on a resample of the test examples.

- **Signals**: Kendall's tau-b and Spearman's rho of each cheap signal at each rung against the full
  dev quality (the mean over tasks of the dev scores) over the space's students, with a 95% interval
  from resampling students; the share of the exhaustive dev front (quality against parameters) that
  survives when only the best third by the signal (non-dominated sorting of signal and parameters,
  `search.pareto.rank`) is kept; and its cost relative to a full evaluation. Parameter count alone is
  the baseline row (a larger student ranks higher).
- **Front against the paper path**: a random search over the space that stops at the paper path's
  cost (its builds, each counted once, and its evaluations); for each paper model the best student
  no larger than it, chosen on dev among those the search built, against the paper model on test.
- **Compression against scratch**, **teacher against random** and **the paper's shape of result**
  (the drop of each task against compression, and which task is most robust).

Every difference is A minus B in the mean over tasks of the test scores (and per task), with a 95%
paired bootstrap interval: test examples are resampled alike for both models, and each model's seeds
are resampled. A difference whose interval holds 0 is a tie.

- **A rebuild** (``--against``, a table of the same setup built again, teacher included): each model's
  change against that interval of one build, tau between the two builds' orders, the dev fronts' overlap,
  and every claim of both analyses side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from pipeline.errors import UsageError  # noqa: E402
from pipeline.metrics import resampled_scores  # noqa: E402
from search.pareto import pareto_front, rank  # noqa: E402

TOOL = "lrl-compress maltese table"


# ---------------------------------------------------------------------------- reading
def read_table(path: Path) -> dict:
    """The table in ``path``.

    Raises:
        UsageError: when the file is missing, not JSON, or not a table of this tool.
    """
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{path}: cannot read the table ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
    if not isinstance(table, dict) or table.get("tool") != TOOL or not isinstance(table.get("students"), list):
        raise UsageError(f"{path}: not a table of this tool (no \"tool\": \"{TOOL}\" with a students list)")
    return table


def tasks_of(table: dict) -> list[str]:
    return sorted({t for s in table["students"] for t in s.get("dev", {})})


def quality(row: dict, split: str = "dev") -> float:
    return statistics.fmean(row[split].values())


# ---------------------------------------------------------------------------- the bootstrap
class Bootstrap:
    """Paired resamples of every task's test (or dev) examples, shared by all comparisons of one run."""

    def __init__(self, table: dict, resamples: int = 2000, seed: int = 0, split: str = "test"):
        self.split, self.resamples = split, resamples
        self.rng = np.random.default_rng(seed)
        reference = table["teacher"] or table["students"][0]
        self.indices = {}
        for task, examples in reference["examples"].items():
            n = _length(examples[split][0])
            self.indices[task] = self.rng.integers(0, n, size=(resamples, n))

    def scores(self, row: dict, task: str) -> np.ndarray:
        """``[resamples]`` scores of ``row`` on ``task``: each resample's examples, seeds resampled too."""
        per_seed = np.stack([resampled_scores(stats, self.indices[task]) for stats in row["examples"][task][self.split]])
        seeds = self.rng.integers(0, len(per_seed), size=(self.resamples, len(per_seed)))
        return per_seed[seeds, np.arange(self.resamples)[:, None]].mean(1)

    def compare(self, a: dict, b: dict, tasks: list[str]) -> dict:
        """A minus B per task and on the mean over tasks: the observed difference and its 95% interval."""
        out, diffs = {}, []
        for task in tasks:
            diff = self.scores(a, task) - self.scores(b, task)
            diffs.append(diff)
            out[task] = _interval(a[self.split][task] - b[self.split][task], diff)
        mean = np.mean(diffs, axis=0)
        out["mean"] = _interval(statistics.fmean(a[self.split][t] for t in tasks)
                                - statistics.fmean(b[self.split][t] for t in tasks), mean)
        return out


def _length(stats: dict) -> int:
    return len(next(v for k, v in stats.items() if k != "metric"))


def _interval(observed: float, samples: np.ndarray) -> dict:
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    verdict = "tie" if low <= 0 <= high else ("A better" if low > 0 else "B better")
    return {"diff": round(float(observed), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "verdict": verdict}


# ---------------------------------------------------------------------------- signals
def space_students(table: dict) -> list[dict]:
    return [s for s in table["students"] if s.get("space") and "dev" in s]


def dev_front(rows: list[dict]) -> set[str]:
    records = [{"id": r["name"], "metrics": {"quality": quality(r), "params": r["params"]}} for r in rows]
    return pareto_front(records, [("quality", "max"), ("params", "min")])


def signal_report(table: dict, signal: str, rung: str, resamples: int = 1000, seed: int = 0) -> dict:
    """tau, rho (with intervals over students), front survival and relative cost of one signal at one rung."""
    from scipy.stats import kendalltau, spearmanr

    rows = [s for s in space_students(table) if rung in (s.get("signals", {}).get(signal) or {})]
    if len(rows) < 3:
        raise UsageError(f"signal {signal} at rung {rung}: only {len(rows)} students of the space have it")
    sign = -1.0 if table["signals"][signal] == "min" else 1.0
    values = np.array([sign * s["signals"][signal][rung] for s in rows])
    target = np.array([quality(s) for s in rows])
    tau, rho = kendalltau(values, target).statistic, spearmanr(values, target).statistic
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(resamples):
        pick = rng.integers(0, len(rows), size=len(rows))
        if len(set(values[pick])) > 1 and len(set(target[pick])) > 1:
            taus.append(kendalltau(values[pick], target[pick]).statistic)
            rhos.append(spearmanr(values[pick], target[pick]).statistic)
    front = dev_front(rows)
    order = rank([(-v, s["params"]) for v, s in zip(values, rows)])
    kept = {rows[i]["name"] for i in order[: math.ceil(len(rows) / 3)]}
    evaluation = statistics.fmean(s["eval_cost_s"] for s in rows)
    cost = statistics.fmean(s["signal_cost_s"][signal][rung] for s in rows)
    return {"signal": signal, "rung": rung, "students": len(rows), "tau": _round(tau), "tau_95": _pct(taus),
            "rho": _round(rho), "rho_95": _pct(rhos), "front": len(front), "front_kept": len(front & kept),
            "front_survival": round(len(front & kept) / len(front), 3), "cost_s": round(cost, 2),
            "cost_vs_full_evaluation": round(cost / evaluation, 4)}


def params_report(table: dict) -> dict:
    """The baseline: rank by parameter count alone (larger is better)."""
    from scipy.stats import kendalltau, spearmanr

    rows = space_students(table)
    values, target = [s["params"] for s in rows], [quality(s) for s in rows]
    return {"signal": "params", "rung": "-", "students": len(rows), "tau": _round(kendalltau(values, target).statistic),
            "rho": _round(spearmanr(values, target).statistic)}


def _round(value) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 3)


def _pct(samples: list[float]) -> list[float] | None:
    finite = [s for s in samples if math.isfinite(s)]
    return [round(float(x), 3) for x in np.percentile(finite, [2.5, 97.5])] if finite else None


# ---------------------------------------------------------------------------- front against the paper path
def _own_keys(row: dict) -> set[str]:
    return {key for path in row.get("rung_paths", {}).values() for key in path} or set(row.get("path", []))


def cost_of(rows: list[dict], builds: dict) -> float:
    """Builds of ``rows`` at every rung, each counted once, and their full evaluations."""
    keys = set().union(*(_own_keys(r) for r in rows)) if rows else set()
    return sum(builds.get(k) or 0.0 for k in keys) + sum(r["eval_cost_s"] for r in rows)


def searched_at_cost(table: dict, budget: float, seed: int) -> list[dict]:
    """The students a random search over the space builds (in a seeded order) before its cost passes ``budget``.
    The order is drawn over the students by name, not as the table stores them (the order they finished in)."""
    order = sorted(space_students(table), key=lambda r: r["name"])
    random.Random(seed).shuffle(order)
    chosen: list[dict] = []
    for row in order:
        if cost_of(chosen + [row], table["builds"]) > budget:
            break
        chosen.append(row)
    return chosen


def paper_models(table: dict) -> list[dict]:
    """The paper path's models that were evaluated in full, largest first."""
    return sorted((s for s in table["students"] if s.get("paper") and "dev" in s), key=lambda r: -r["params"])


def against_paper(table: dict, boot: Bootstrap, searched: list[dict]) -> list[dict]:
    """For each paper model, the best student of ``searched`` no larger than it (chosen on dev) against
    the paper model on test, with paired intervals."""
    tasks = tasks_of(table)
    rows = []
    for model in paper_models(table):
        pool = [s for s in searched if s["params"] <= model["params"]]
        if not pool:
            rows.append({"paper": model.get("paper_name") or model["name"], "params": model["params"], "searched": None})
            continue
        best = max(pool, key=quality)
        rows.append({"paper": model.get("paper_name") or model["name"], "paper_model": model["name"],
                     "params": model["params"], "searched": best["name"], "searched_params": best["params"],
                     "dev": {"searched": round(quality(best), 4), "paper": round(quality(model), 4)},
                     "test": boot.compare(best, model, tasks)})
    return rows


def front_against_paper(table: dict, boot: Bootstrap, seeds: int = 10) -> dict:
    budget = cost_of(paper_models(table), table["builds"])
    searched = searched_at_cost(table, budget, 0)
    rows = against_paper(table, boot, searched)
    for row in rows:
        if row.get("searched"):
            limit = row["params"]
            same = sum(1 for s in range(seeds)
                       if max((x for x in searched_at_cost(table, budget, s) if x["params"] <= limit),
                              key=quality, default={"name": None})["name"] == row["searched"])
            row["same_choice_of_seeds"] = f"{same}/{seeds}"
    return {"paper_cost_s": round(budget, 1), "searched": [s["name"] for s in searched],
            "searched_cost_s": round(cost_of(searched, table["builds"]), 1), "rows": rows}


# ---------------------------------------------------------------------------- scratch, teacher, the paper's shape
def compression_against_scratch(table: dict, boot: Bootstrap) -> list[dict]:
    students = {s["name"]: s for s in table["students"]}
    tasks = tasks_of(table)
    rows = []
    for scratch in table.get("scratch", []):
        compressed = students[scratch["of"]]
        rows.append({"student": compressed["name"], "budget": scratch["budget"], "params": compressed["params"],
                     "scratch_steps": scratch["steps"], "flops": scratch["flops"], "flops_budget": scratch["flops_budget"],
                     "test": boot.compare(compressed, scratch, tasks)})
    return rows


def teacher_against_random(table: dict, boot: Bootstrap) -> dict:
    return boot.compare(table["teacher"], table["random"], tasks_of(table))


def paper_shape(table: dict, boot: Bootstrap) -> dict:
    """Each paper model's relative drop per task against the teacher (test), with intervals; the most
    robust task is the one with the smallest mean drop over the paper models, and how often each task
    is that one over the resamples."""
    teacher, tasks = table["teacher"], tasks_of(table)
    paper = paper_models(table)
    base = {t: boot.scores(teacher, t) for t in tasks}
    rows, means = [], {t: [] for t in tasks}
    for model in paper:
        drops = {}
        for task in tasks:
            sample = (base[task] - boot.scores(model, task)) / np.where(base[task] == 0, np.nan, base[task])
            means[task].append(sample)
            observed = (teacher["test"][task] - model["test"][task]) / teacher["test"][task]
            drops[task] = _interval(observed, sample)
        rows.append({"model": model.get("paper_name") or model["name"], "params": model["params"],
                     "compression": round(1 - model["params"] / teacher["params"], 3), "drop": drops})
    stacked = np.stack([np.nanmean(np.stack(means[t]), axis=0) for t in tasks])  # [tasks, resamples]
    winners = np.argmin(stacked, axis=0)
    observed = {t: statistics.fmean((teacher["test"][t] - m["test"][t]) / teacher["test"][t] for m in paper) for t in tasks}
    return {"rows": rows, "mean_drop": {t: _interval(observed[t], stacked[i]) for i, t in enumerate(tasks)},
            "most_robust": min(observed, key=observed.get),
            "most_robust_share": {t: round(float(np.mean(winners == i)), 3) for i, t in enumerate(tasks)}}


# ---------------------------------------------------------------------------- a rebuild
def _scratch_name(row: dict) -> str:
    return f"{row['of']} from scratch ({row['budget']} FLOPs)"


def _pairs(this: dict, other: dict) -> list[tuple[str, str, dict, dict]]:
    """``(kind, name, this row, other row)`` of every model both tables evaluated in full."""
    pairs = [(name, name, this[name], other[name]) for name in ("teacher", "random") if this.get(name) and other.get(name)]
    theirs = {s["name"]: s for s in other["students"] if "dev" in s}
    pairs += [("paper" if s.get("paper") and not s.get("space") else "student", s["name"], s, theirs[s["name"]])
              for s in this["students"] if "dev" in s and s["name"] in theirs]
    scratch = {_scratch_name(s): s for s in other.get("scratch", [])}
    pairs += [("scratch", _scratch_name(s), s, scratch[_scratch_name(s)]) for s in this.get("scratch", [])
              if _scratch_name(s) in scratch]
    return pairs


def rebuild_report(this: dict, other: dict, resamples: int = 2000, seed: int = 0) -> dict:
    """The same setup tabulated twice, teacher and students rebuilt: how far a rebuild moves each model.

    For every model both tables evaluated: its dev quality in each, and this build minus the other on test
    with the paired interval of one build (test examples and evaluation seeds resampled alike). A rebuild
    that moves a model beyond that interval shows build-to-build variance the interval does not hold.
    Over the space's students: the mean, mean absolute and largest change of dev and test quality, Kendall's
    tau between the builds' orders, and how many of each build's dev front the other's front keeps.

    Raises:
        UsageError: when the tables are of different setups or were scored on different test sets.
    """
    from scipy.stats import kendalltau

    mine, theirs = ((t.get("fingerprint") or {}).get("hash") for t in (this, other))
    if mine != theirs:
        raise UsageError(f"--against: a table of another setup (fingerprint {theirs}, this table's {mine})")
    pairs = _pairs(this, other)
    tasks = tasks_of(this)
    if not pairs or tasks_of(other) != tasks:
        raise UsageError("--against: the tables share no model evaluated on the same tasks")
    for _, name, a, b in pairs:
        for task in tasks:
            if _length(a["examples"][task]["test"][0]) != _length(b["examples"][task]["test"][0]):
                raise UsageError(f"--against: {name} was scored on another {task} test set in the other table")
    boot = Bootstrap(this, resamples, seed)
    rows = [{"kind": kind, "name": name, "params": a["params"],
             "dev": {"this": round(quality(a), 4), "other": round(quality(b), 4)},
             "test": {"this": round(quality(a, "test"), 4), "other": round(quality(b, "test"), 4)},
             "test_diff": boot.compare(a, b, tasks)["mean"]} for kind, name, a, b in pairs]
    space = [(a, b) for kind, _, a, b in pairs if kind == "student" and a.get("space")]
    summary = {"students": len(space)}
    for split in ("dev", "test"):
        diffs = [quality(a, split) - quality(b, split) for a, b in space]
        summary[split] = {"mean": _round(statistics.fmean(diffs)), "mean_abs": _round(statistics.fmean(map(abs, diffs))),
                          "max_abs": _round(max(map(abs, diffs))),
                          "tau": _round(kendalltau([quality(a, split) for a, _ in space],
                                                   [quality(b, split) for _, b in space]).statistic)}
    verdicts = [r["test_diff"]["verdict"] for r in rows if r["kind"] == "student"]
    summary["beyond_interval"] = len(verdicts) - verdicts.count("tie")
    fronts = dev_front([a for a, _ in space]), dev_front([b for _, b in space])
    summary["front"] = {"this": sorted(fronts[0]), "other": sorted(fronts[1]), "both": sorted(fronts[0] & fronts[1])}
    return {"summary": summary, "rows": rows}


def _claims(result: dict) -> dict[str, dict]:
    """Every claim of one analysis by a name that does not depend on the build: its difference and verdict,
    or a signal's tau and interval."""
    claims = {}
    if "teacher_vs_random" in result:
        claims["teacher - random"] = result["teacher_vs_random"]["mean"]
        for r in result["front_vs_paper"]["rows"]:
            if r.get("searched"):
                claims[f"searched - paper {r['paper']}"] = {**r["test"]["mean"], "searched": r["searched"]}
        for r in result["compression_vs_scratch"]:
            claims[f"{r['student']} - scratch ({r['budget']} FLOPs)"] = r["test"]["mean"]
    for r in result["signals"]:
        if r["signal"] != "params" and r.get("tau") is not None:
            claims[f"tau {r['signal']} at rung {r['rung']}"] = {"tau": r["tau"], "tau_95": r.get("tau_95")}
    return claims


def replication(this: dict, other: dict) -> list[dict]:
    """Each claim that both analyses make, side by side: the same verdict, or (signals) overlapping intervals."""
    mine, theirs = _claims(this), _claims(other)
    rows = []
    for name, a in mine.items():
        if name not in theirs:
            continue
        b = theirs[name]
        if "tau" in a:
            same = bool(a["tau_95"] and b["tau_95"] and a["tau_95"][0] <= b["tau_95"][1] and b["tau_95"][0] <= a["tau_95"][1])
        else:
            same = a["verdict"] == b["verdict"]
        rows.append({"claim": name, "this": a, "other": b, "agree": same})
    return rows


# ---------------------------------------------------------------------------- the report
def analyse(table: dict, *, signals: list[str] | None = None, rungs: list[str] | None = None,
            resamples: int = 2000, seed: int = 0) -> dict:
    """Every analysis of the table; ``signals`` / ``rungs`` restrict the signal part.

    Raises:
        UsageError: for a signal or a rung the table lacks.
    """
    known = list(table.get("signals") or {})
    for signal in signals or []:
        if signal not in known:
            raise UsageError(f"--signal {signal}: the table has no such signal (it has {', '.join(known)})")
    present = sorted({r for s in table["students"] for d in (s.get("signals") or {}).values() for r in d}, key=int)
    for rung in rungs or []:
        if rung not in present:
            raise UsageError(f"--rung {rung}: the table has no such rung (it has {', '.join(present)})")
    result = {"table": {"students": len(table["students"]), "space": len(space_students(table)),
                        "runs": [{k: r.get(k) for k in ("command", "commit", "dirty", "date", "started", "ended",
                                                         "wall_s", "phases", "teacher_built_s", "machine")}
                                 for r in table.get("runs", [])],
                        "teacher_built_before_s": _teacher_built_before(table)},
              "protocol": table.get("protocol"),
              "signals": [params_report(table)]}
    for name in ("teacher", "random"):
        if (table.get(name) or {}).get("signals"):
            result.setdefault("reference_signals", {})[name] = {
                signal: round(value["value"], 4) for signal, value in table[name]["signals"].items()}
    for signal in signals or known:
        for rung in rungs or present:
            result["signals"].append(signal_report(table, signal, rung, seed=seed))
    if table.get("teacher") and table.get("random"):
        boot = Bootstrap(table, resamples, seed)
        result["teacher_vs_random"] = teacher_against_random(table, boot)
        result["paper_shape"] = paper_shape(table, boot)
        result["front_vs_paper"] = front_against_paper(table, boot)
        result["compression_vs_scratch"] = compression_against_scratch(table, boot)
    return result


def _teacher_built_before(table: dict) -> float | None:
    """The wall seconds of a teacher built before the table's runs (None when a run built it: its time is
    in that run's)."""
    if any(r.get("teacher_built_s") for r in table.get("runs", [])):
        return None
    return (table.get("teacher") or {}).get("build_wall_s")


def findings(result: dict) -> list[str]:
    """What the numbers say, in sentences built from them (no number here is typed by hand)."""
    out = []
    if "teacher_vs_random" in result:
        m = result["teacher_vs_random"]["mean"]
        out.append(f"Teacher against a random model of its shape, mean test score over tasks: {_ci(m)}, {m['verdict']}.")
        rows = [r for r in result["front_vs_paper"]["rows"] if r.get("searched")]
        verdicts = [r["test"]["mean"]["verdict"] for r in rows]
        out.append(f"Searched front (chosen on dev, at the paper path's cost) against each paper model on test: "
                   f"{verdicts.count('A better')} better, {verdicts.count('tie')} ties, {verdicts.count('B better')} "
                   f"worse, of {len(rows)}; differences from {min(r['test']['mean']['diff'] for r in rows):+.3f} "
                   f"to {max(r['test']['mean']['diff'] for r in rows):+.3f}." if rows else
                   "The search at the paper path's cost built no student no larger than a paper model.")
        for budget in ("path", "path+teacher"):
            rows = [r for r in result["compression_vs_scratch"] if r["budget"] == budget]
            if rows:
                verdicts = [r["test"]["mean"]["verdict"] for r in rows]
                diffs = ", ".join(f"{r['test']['mean']['diff']:+.3f}" for r in rows)
                out.append(f"Compression against scratch at the FLOPs of the {budget.replace('+', ' plus the ')}"
                           f"{'' if budget == 'path' else ' pretraining'}: compression better for "
                           f"{verdicts.count('A better')}, tie for {verdicts.count('tie')}, scratch better for "
                           f"{verdicts.count('B better')} of {len(rows)} shapes; mean differences {diffs}.")
        shape = result["paper_shape"]
        out.append(f"Most robust task along the paper path (smallest mean relative drop against the teacher): "
                   f"{shape['most_robust']} ({100 * shape['most_robust_share'][shape['most_robust']]:.0f}% of "
                   f"resamples agree).")
    signals = [r for r in result["signals"] if r["signal"] != "params" and r.get("tau") is not None]
    if signals:
        base = next(r for r in result["signals"] if r["signal"] == "params")
        for rung in sorted({r["rung"] for r in signals}, key=int):
            best = max((r for r in signals if r["rung"] == rung), key=lambda r: r["tau"])
            out.append(f"Rung {rung}: the best signal is {best['signal']} (tau {best['tau']:+.3f}, 95% "
                       f"{best['tau_95']}; parameters alone {base['tau']:+.3f}); it keeps {best['front_kept']} of the "
                       f"{best['front']} dev-front students in its best third at {best['cost_vs_full_evaluation']:.3f} "
                       f"of a full evaluation's cost.")
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ci(cell: dict) -> str:
    return f"{cell['diff']:+.3f} [{cell['low']:+.3f}, {cell['high']:+.3f}]"


def markdown(result: dict, tasks: list[str]) -> str:
    lines = []
    protocol = result.get("protocol")
    if protocol and protocol.get("decision"):
        decision = protocol["decision"]
        lines += ["Protocol pilots (dev, one seed): teacher minus random per option.", "",
                  "| option | " + " | ".join(tasks) + " | mean |", "|---|" + "---:|" * (len(tasks) + 1)]
        for option, gap in decision["gaps"].items():
            mark = " (chosen)" if option == decision["option"] else ""
            lines.append(f"| {option}{mark} | " + " | ".join(f"{gap['tasks'][t]:+.3f}" for t in tasks)
                         + f" | {gap['mean']:+.3f} |")
        if "pretraining" in protocol:
            chosen = protocol["pretraining"]["steps"]
            lines.append("\nPretraining length (teacher's mean dev score under the chosen protocol): "
                         + ", ".join(f"{steps} steps {value:.3f}{' (chosen)' if int(steps) == chosen else ''}"
                                     for steps, value in protocol["pretraining"]["dev"].items()) + ".")
        lines.append("")
    lines += ["| signal | rung | tau [95%] | rho [95%] | front kept (best third) | cost vs full evaluation |",
              "|---|---:|---|---|---:|---:|"]
    for r in result["signals"]:
        tau = f"{r['tau']:+.3f}" + (f" [{r['tau_95'][0]:+.2f}, {r['tau_95'][1]:+.2f}]" if r.get("tau_95") else "")
        rho = f"{r['rho']:+.3f}" + (f" [{r['rho_95'][0]:+.2f}, {r['rho_95'][1]:+.2f}]" if r.get("rho_95") else "")
        kept = f"{r['front_kept']}/{r['front']}" if "front" in r else ""
        cost = f"{r['cost_vs_full_evaluation']:.3f}" if "cost_vs_full_evaluation" in r else ""
        lines.append(f"| {r['signal']} | {r['rung']} | {tau} | {rho} | {kept} | {cost} |")
    if result.get("reference_signals"):
        ref = result["reference_signals"]
        lines.append("\nThe same signals of the teacher and of a random model of its shape (distillation loss "
                     "against the teacher): " + "; ".join(f"{signal} {ref['teacher'][signal]:.3f} against "
                                                          f"{ref['random'][signal]:.3f}" for signal in ref["teacher"]) + ".")
    if "teacher_vs_random" not in result:
        return "\n".join(lines)
    head = "| comparison (A - B, test) | " + " | ".join(tasks) + " | mean over tasks |"
    lines += ["", head, "|---|" + "---|" * (len(tasks) + 1)]

    def row(name: str, cells: dict) -> str:
        return f"| {name} | " + " | ".join(_ci(cells[t]) for t in tasks) + f" | **{_ci(cells['mean'])}** ({cells['mean']['verdict']}) |"

    lines.append(row("teacher - random", result["teacher_vs_random"]))
    for r in result["front_vs_paper"]["rows"]:
        if r.get("searched"):
            lines.append(row(f"searched {r['searched']} - paper {r['paper']} ({r['same_choice_of_seeds']} orders agree)",
                             r["test"]))
    for r in result["compression_vs_scratch"]:
        lines.append(row(f"{r['student']} - scratch ({r['budget']} FLOPs, {r['scratch_steps']} steps)", r["test"]))
    shape = result["paper_shape"]
    lines += ["", "| paper model | compression | " + " | ".join(f"{t} drop" for t in tasks) + " |",
              "|---|---:|" + "---|" * len(tasks)]
    for r in shape["rows"]:
        lines.append(f"| {r['model']} | {100 * r['compression']:.1f}% | "
                     + " | ".join(_ci(r["drop"][t]) for t in tasks) + " |")
    lines.append("| mean over the paper models | | " + " | ".join(_ci(shape["mean_drop"][t]) for t in tasks) + " |")
    lines.append(f"\nMost robust task (smallest mean relative drop): {shape['most_robust']}; share of resamples in "
                 f"which each task is: {json.dumps(shape['most_robust_share'])}. Paper path cost "
                 f"{result['front_vs_paper']['paper_cost_s']:.0f} CPU s; the random search at that cost built "
                 f"{_count(len(result['front_vs_paper']['searched']), 'student')} "
                 f"({result['front_vs_paper']['searched_cost_s']:.0f} s).")
    lines += ["", "Findings:", ""] + [f"- {line}" for line in findings(result)]
    runs = result["table"]["runs"]
    if runs:
        lines.append("\nTime: " + "; ".join(
            f"run {i + 1} ({r['date']}, commit {str(r['commit'])[:7]}{', uncommitted changes' if r.get('dirty') else ''}): "
            f"{r.get('wall_s') or 0:,.0f} s wall" + (", phases " + ", ".join(f"{k} {v:,.0f} s" for k, v in
                                                                              (r.get("phases") or {}).items())
                                                   if r.get("phases") else "")
            for i, r in enumerate(runs)) + (f"; the teacher's build before them {result['table']['teacher_built_before_s']:,.0f} s wall"
                                           if result["table"].get("teacher_built_before_s") else "") + ".")
        total = sum(r.get("wall_s") or 0 for r in runs) + (result["table"].get("teacher_built_before_s") or 0)
        lines.append(f"In all {total:,.0f} s wall ({total / 3600:.1f} h) on 2 cores, the teacher's build included.")
    return "\n".join(lines)


def rebuild_markdown(result: dict) -> str:
    """The rebuild section: the summary, each model's change, and the claims of both builds side by side."""
    rebuild, summary = result["rebuild"], result["rebuild"]["summary"]
    dev, test, front = summary["dev"], summary["test"], summary["front"]
    lines = [f"Rebuilt: this table against the other (A = this build, B = the other). Over the "
             f"{summary['students']} students of the space, mean quality over tasks, this minus the other: dev "
             f"{dev['mean']:+.3f} on average (mean absolute {dev['mean_abs']:.3f}, largest {dev['max_abs']:.3f}), test "
             f"{test['mean']:+.3f} (mean absolute {test['mean_abs']:.3f}, largest {test['max_abs']:.3f}); Kendall tau "
             f"between the two builds' orders {dev['tau']:+.3f} on dev, {test['tau']:+.3f} on test. On test, the rebuild "
             f"moved {summary['beyond_interval']} of {summary['students']} students "
             f"beyond the 95% interval of one build. Dev front: {len(front['both'])} of this build's "
             f"{len(front['this'])} are on the other's ({len(front['other'])}).", "",
             "| model | params | dev A / B | test A / B | test A - B [95%, one build] |", "|---|---:|---|---|---|"]
    for r in rebuild["rows"]:
        lines.append(f"| {r['name']} | {r['params']:,} | {r['dev']['this']:.3f} / {r['dev']['other']:.3f} | "
                     f"{r['test']['this']:.3f} / {r['test']['other']:.3f} | {_ci(r['test_diff'])} ({r['test_diff']['verdict']}) |")
    lines += ["", "| claim | this build | the other build | same verdict (signals: intervals overlap) |",
              "|---|---|---|---|"]

    def cell(claim: dict) -> str:
        if "tau" in claim:
            return f"{claim['tau']:+.3f}" + (f" [{claim['tau_95'][0]:+.2f}, {claim['tau_95'][1]:+.2f}]" if claim["tau_95"] else "")
        return _ci(claim) + f" ({claim['verdict']}" + (f", {claim['searched']}" if "searched" in claim else "") + ")"

    for r in result["replication"]:
        lines.append(f"| {r['claim']} | {cell(r['this'])} | {cell(r['other'])} | {'yes' if r['agree'] else 'no'} |")
    agree = [r["agree"] for r in result["replication"]]
    lines.append(f"\n{agree.count(True)} of {len(agree)} claims repeat.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--signal", action="append", help="only this signal (repeat for more)")
    parser.add_argument("--rung", action="append", help="only this rung, in steps (repeat for more)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the numbers here as JSON")
    parser.add_argument("--against", type=Path,
                        help="another table of the same setup (a rebuild): how far it moves each model, which claims repeat")
    args = parser.parse_args(argv)
    try:
        table = read_table(args.table)
        result = analyse(table, signals=args.signal, rungs=args.rung, resamples=args.resamples, seed=args.seed)
        if args.against:
            other = read_table(args.against)
            result["rebuild"] = rebuild_report(table, other, args.resamples, args.seed)
            result["replication"] = replication(result, analyse(other, signals=args.signal, rungs=args.rung,
                                                                resamples=args.resamples, seed=args.seed))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = markdown(result, tasks_of(table)) + ("\n\n" + rebuild_markdown(result) if args.against else "")
    if args.out:
        from provenance import provenance, write_json

        write_json(args.out, {**provenance(["benchmarks/analyse_table.py", *(argv or sys.argv[1:])]),
                              "table_file": str(args.table),
                              **({"against_file": str(args.against)} if args.against else {}), **result})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
