"""search_cost.py's parts run side by side in separate processes: the one that ends last joins them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import search_cost  # noqa: E402


def _part(out: Path, name: str, seconds: int, **changes) -> dict:
    result = {"setup": "maltese", "date": "2026-12-02", "rungs": (22, 66, 200), "factor": 3, "candidates": 6,
              "seed": 0, "threads": 1, "rung_evaluation": {"seeds": None, "epochs": 2, "max_train_examples": 300},
              "seconds": seconds, "parts": {name: {"seconds": seconds - 1.0, "cpu_seconds": seconds - 2.0, "steps": 10}},
              **changes}
    saved = {**result, "rungs": list(result["rungs"])}  # as json gives it back
    (out / f"search-cost-maltese-{name}.json").write_text(json.dumps(saved), encoding="utf-8")
    return result


def test_parts_join_only_when_all_have_ended(tmp_path):
    _part(tmp_path, "cache", 300)
    mine = _part(tmp_path, "full", 500)
    assert search_cost._joined(tmp_path, "maltese", mine) is None  # halving is still running
    mine = _part(tmp_path, "halving", 200)
    result, pieces = search_cost._joined(tmp_path, "maltese", mine)
    assert set(pieces) == {"cache", "full", "halving"}
    assert pieces["full"]["cpu_seconds"] == 498.0
    assert result["seconds"] == 500  # side by side: the longest part is the wall time
    assert result["side_by_side"] is True and "parts" not in result


def test_a_part_from_another_run_is_not_joined(tmp_path):
    _part(tmp_path, "cache", 300, candidates=8)  # a leftover of an earlier run over 8 candidates
    _part(tmp_path, "full", 500)
    mine = _part(tmp_path, "halving", 200)
    assert search_cost._joined(tmp_path, "maltese", mine) is None
    _part(tmp_path, "cache", 300)
    result, pieces = search_cost._joined(tmp_path, "maltese", mine)
    assert pieces["cache"]["seconds"] == 299.0 and result["candidates"] == 6


def test_join_on_request_reports_the_parts_there_are(tmp_path):
    mine = {**_part(tmp_path, "full", 500), "seconds": 0, "parts": {}}
    assert search_cost._joined(tmp_path, "maltese", mine) is None
    result, pieces = search_cost._joined(tmp_path, "maltese", mine, complete=False)
    assert set(pieces) == {"full"} and result["seconds"] == 500
    assert search_cost._joined(tmp_path / "nothing", "maltese", mine, complete=False) is None


def test_trial_ends_are_read_after_the_teachers_evaluation(tmp_path):
    import search_cost_prefix

    log = tmp_path / "part.log"
    log.write_text("\n".join([
        "10:00:00 pipeline.evaluate: sentiment seed 1: test macro_f1 0.5 (dev 0.5)",  # the teacher's own
        "10:00:05 search.prepare: teacher latency: 9.14 ms on torch",
        "10:01:00 pipeline.evaluate: pos seed 1: test accuracy 0.3 (dev 0.3)",
        "10:01:10 pipeline.evaluate: sentiment seed 1: test macro_f1 0.4 (dev 0.4)",  # the warm-up ends
        "10:01:11 pipeline.evaluate: sentiment seed 1 epoch 4/10: train loss 0.6",
        "10:11:10 pipeline.evaluate: sentiment seed 1: test macro_f1 0.6 (dev 0.6)",
    ]), encoding="utf-8")
    assert search_cost_prefix.trial_ends(log, "sentiment") == [36070, 36670]


def test_results_that_are_not_parts_are_left_out(tmp_path):
    (tmp_path / "search-cost-maltese-first-3.json").write_text(json.dumps(
        {"setup": "maltese", "date": "2026-12-02", "rungs": [22, 66, 200], "factor": 3, "candidates": 6, "seed": 0,
         "rung_evaluation": {"seeds": None, "epochs": 2, "max_train_examples": 300}, "seconds": 9}), encoding="utf-8")
    mine = _part(tmp_path, "full", 500)
    result, pieces = search_cost._joined(tmp_path, "maltese", mine, complete=False)
    assert set(pieces) == {"full"} and result["seconds"] == 500
