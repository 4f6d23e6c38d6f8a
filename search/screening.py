"""Screening (``search.screen``): every candidate scored with a cheap signal at rung 0, then ranked.

Plain records, no Ray: the driver builds and scores the candidates as Ray tasks
(`search.tuner.screen`), and this module keeps what they returned, resumable, and orders the
candidates for the trials. The order is NSGA-II's (`search.pareto.rank`) on the signal and the
parameter count, both minimised: non-dominated fronts first, the less crowded first within a front,
so the first trials spread along the front of small and promising students. A candidate whose
screening failed comes last, in the space's order.

The record (``screening.json`` in the experiment's folder) is written after every candidate, through a
temporary file and a rename, and ranked best first once every candidate is in; a resumed search
screens only the candidates it lacks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from search.pareto import rank

__all__ = ["SCREEN_FILE", "format_screening", "ranked", "read_screening", "write_screening"]

SCREEN_FILE = "screening.json"


def read_screening(path: Path, signal: str) -> dict[str, dict[str, Any]]:
    """``{label: record}`` screened earlier with ``signal`` (empty when there is no file or another signal)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("signal") != signal or not isinstance(data.get("candidates"), list):
        return {}
    return {row["label"]: row for row in data["candidates"] if isinstance(row, dict) and "label" in row}


def write_screening(path: Path, signal: str, better: str, records: Iterable[Mapping[str, Any]]) -> None:
    """The records, in their order, as JSON in ``path`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"signal": signal, "better": better, "candidates": list(records)}, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def ranked(records: Iterable[Mapping[str, Any]], better: str) -> list[dict[str, Any]]:
    """The records best first: by `search.pareto.rank` on (signal, params), the signal turned into
    "smaller is better" (``better``: ``min`` or ``max``); records without a value (failed) last."""
    records = [dict(r) for r in records]
    scored = [r for r in records if r.get("value") is not None]
    sign = 1.0 if better == "min" else -1.0
    order = rank([(sign * float(r["value"]), float(r["params"])) for r in scored])
    failed = [r for r in records if r.get("value") is None]
    return [scored[i] for i in order] + failed


def format_screening(records: list[Mapping[str, Any]], signal: str, shown: int = 10) -> str:
    """The first ``shown`` records, one line each, and the screening's cost."""
    lines = [f"screening by {signal}: {len(records)} candidates, best first"]
    for i, r in enumerate(records[:shown], 1):
        value = "failed" if r.get("value") is None else f"{r['value']:.4f}"
        lines.append(f"  {i:>3}. {r['label']:<28} {signal} {value:>8}  params {r['params']:,}")
    if len(records) > shown:
        lines.append(f"  ... {len(records) - shown} more")
    cost = sum((r.get("build_cpu_s") or 0.0) + (r.get("signal_cpu_s") or 0.0) for r in records)
    lines.append(f"  screening cost: {cost:,.0f} CPU s (builds and signals, as measured in each task)")
    return "\n".join(lines)
