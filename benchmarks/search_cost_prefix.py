"""The multi-fidelity comparison of `search_cost.py` over the first K candidates of a run stopped early.

    python benchmarks/search_cost.py --setup maltese --candidates 6 --parts full --threads 1 > full.log 2>&1 &
    python benchmarks/search_cost.py --setup maltese --candidates 6 --parts halving --threads 1 > halving.log 2>&1 &
    # ... stopped after the full side trained K candidates:
    python benchmarks/search_cost_prefix.py --setup maltese --candidates 6 --first K \\
        --full-log full.log --halving-log halving.log

A part of `search_cost.py` writes its numbers only when it ends. When a side has to be stopped, both
sides' trials are still in their stage caches (``<work>/runs/fidelity/{full,halving}``) and in their
logs. Successive halving decides each candidate's promotions from the candidates before it only, so
the halving over the first K candidates is the first trials of the longer run. This replays both
sides over the first K candidates with `search_cost`'s own code: every stage and score comes back
from the cache (nothing is trained again), and each trial's cost is the wall time between the end of
its evaluation and the end of the one before it in the side's log (the evaluation's last task,
``sentiment`` or the setup's last, ends each trial; the first such line ends the untimed warm-up).
With one thread a side and a core each, wall seconds stand for CPU seconds; they are reported as
both. A rescoring of the K-candidate front that the longer run did not do is computed now and timed.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import search_cost  # noqa: E402
from provenance import fresh_path, provenance, write_json  # noqa: E402

log = logging.getLogger("search_cost_prefix")


def trial_ends(log_path: Path, last_task: str) -> list[int]:
    """Seconds of the day at which each trial's evaluation ended, the warm-up's first."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    text = text[text.index("teacher latency"):]  # the teacher's own evaluation comes before
    pattern = re.compile(rf"^(\d\d):(\d\d):(\d\d) pipeline\.evaluate: {re.escape(last_task)} seed \d+: test", re.M)
    return [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in pattern.findall(text)]


class Replay:
    """A `search_cost._run` that takes each trial from the cache and its cost from the log, in order;
    ``costs`` (by candidate, rung and scoring) are then looked up instead, and what is missing runs."""

    def __init__(self, pool, ends: list[int] | None = None, costs: dict | None = None):
        self.pool, self.ends, self.costs, self.seen, self.calls = pool, ends, costs or {}, set(), 0
        self.labelled: dict[tuple, float] = {}

    def __call__(self, context, candidate, rung=None, full_scoring=False):
        label = (self.pool.index(candidate), rung, full_scoring)
        seconds = self.costs.get(label)
        if self.ends is not None:
            if self.calls + 1 >= len(self.ends):
                raise _LogEnded
            seconds = self.labelled[label] = float(self.ends[self.calls + 1] - self.ends[self.calls])
            self.calls += 1
        elif seconds is None:
            log.info("not in the log, running it now: candidate %d, rung %s, full scoring %s", *label)
        outcome, spent, _ = search_cost._run(context, candidate, rung=rung, full_scoring=full_scoring)
        seconds = spent if seconds is None else seconds
        result = outcome["result"]
        keys = result.get("stage_keys", {})
        result["cached"] = [stage for stage, key in keys.items() if key in self.seen]  # as in the side's own cache
        self.seen.update(keys.values())
        return outcome, seconds, seconds


class _LogEnded(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=["demo", "maltese", "quick"], default="maltese")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", type=int, required=True, help="as the stopped run was given")
    parser.add_argument("--first", type=int, required=True, help="compare over the first K candidates")
    parser.add_argument("--full-log", type=Path, required=True)
    parser.add_argument("--halving-log", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    torch.set_num_threads(args.threads)
    work = (args.work or REPO / "benchmarks" / "work" / f"search-cost-{args.setup}").resolve()
    spec, context, reference, pool, _ = search_cost.prepared(args.setup, work, args.seed, args.candidates)
    last_task = list(spec.data.tasks)[-1]
    factor = spec.search.fidelity.reduction_factor
    objectives = [("quality", "max"), ("params", "min")]
    first = pool[: args.first]
    runs = work / "runs" / "fidelity"

    full_ends = trial_ends(args.full_log, last_task)
    if len(full_ends) - 1 < args.first:
        print(f"{args.full_log}: only {len(full_ends) - 1} trials ended, not {args.first}", file=sys.stderr)
        return 1
    full = search_cost.full_fidelity(context, first, context.rungs, objectives, runs, run=Replay(pool, full_ends))
    labelling = Replay(pool, trial_ends(args.halving_log, last_task))
    try:  # the stopped run's own sequence, to put a cost on each of its trials
        search_cost.halving(context, pool, context.rungs, factor, objectives, runs, run=labelling)
    except _LogEnded:
        pass
    half = search_cost.halving(context, first, context.rungs, factor, objectives, runs,
                               run=Replay(pool, costs=labelling.labelled))
    result = {**provenance(["benchmarks/search_cost_prefix.py", *sys.argv[1:]]), "setup": args.setup,
              "rungs": context.rungs, "factor": factor,
              "candidates": args.first, "of_candidates": args.candidates, "seed": args.seed,
              "rung_evaluation": spec.search.fidelity.model_dump()["rung_evaluation"],
              "from_logs": [str(args.full_log), str(args.halving_log)],
              # what the costs were read from, so the result can be checked without the logs
              "trial_ends_s": {"full": full_ends, "halving": labelling.ends}}
    mf = {"full": full, "halving": half}
    result.update(fidelity=mf, **search_cost.report(f"{args.setup}, first {args.first}", None, mf,
                                                    (0.0, float(reference["params"]))))
    args.out.mkdir(parents=True, exist_ok=True)
    path = fresh_path(args.out, f"search-cost-{args.setup}-first-{args.first}")
    write_json(path, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
