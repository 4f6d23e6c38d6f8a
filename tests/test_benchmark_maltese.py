"""The Maltese benchmark's protocol end to end at its quick size (slow: a few minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_protocol_runs_every_group(tmp_path, shared_data):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "maltese.py"), "--quick", "--data", str(shared_data),
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    groups = {row[0].strip("| ") for row in rows}
    assert {"teacher", "random", "paper", "search", "scratch"} <= groups
    (written,) = (tmp_path / "out").glob("maltese-quick-*.json")  # dated: a later run writes a new file
    result = json.loads(written.read_text())
    assert result["commit"] and result["machine"]["cpus"] and result["command"].startswith("benchmarks/maltese.py")
    assert len([r for r in result["rows"] if r["group"] == "paper"]) == 8  # every intermediate of the path
    budget = result["budget"]
    assert budget["search_distill_steps_used"] <= budget["paper_distill_steps"]  # the search got no more compute
    for row in result["rows"]:
        assert set(row["dev"]) == set(row["test"]) == {"pos", "topic", "sentiment"}
    scratch = [r for r in result["rows"] if r["group"] == "scratch"]
    front = {r["model"]: r for r in result["rows"] if r.get("pareto")}
    assert scratch and all(front[r["model"].removesuffix(" from scratch")]["steps"] == r["steps"] for r in scratch)
    assert written.with_suffix(".png").stat().st_size > 0
