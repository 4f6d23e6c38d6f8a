"""The live search's summary (benchmarks/live_search.py) on the replay's hand-made table: a live search
that makes the replay's choices and scores as the table did gets the replay's figures on the table's
clock; one whose best student scored worse live does not reach the front."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.test_benchmark_replay import SHAPES, hand_table

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks")]

import live_search  # noqa: E402
import replay  # noqa: E402


def _trials(table: dict, order: str, dev: dict[str, float] | None = None) -> list[dict]:
    names = {row["name"]: replay.row_label(row) for row in table["students"]}
    dev = dev or {}
    return [{"trial": f"t{i}", "name": names[n], "params": SHAPES[n][2], "cpu_s": 7.5,
             "dev": dev.get(n, SHAPES[n][3]), "test": SHAPES[n][3]} for i, n in enumerate(order)]


def test_a_live_search_that_chooses_and_scores_as_the_replay_gets_its_figures():
    table = hand_table()
    names = {row["name"]: replay.row_label(row) for row in table["students"]}
    screened = {names[n]: SHAPES[n][3] for n in "ADBC"}  # the replay's screening order (test_benchmark_replay)
    result = live_search.summarise(table, screened, 13.0, _trials(table, "ADBC"), None, "probe")
    assert result["rank_agreement"] == 1.0 and result["dev_abs_diff_vs_table"] == {"mean": 0.0, "max": 0.0}
    # on the table's clock: rung 0 for all (26 s), then 15 s a student; A and D hold 96% at 56 of 84 s
    assert [t["table_clock_s"] for t in result["trial_rows"]] == [41, 56, 71, 86]
    assert result["table_clock"] == {"screening_vs_exhaustive": pytest.approx(26 / 84, abs=1e-4),
                                     "spent_vs_exhaustive": pytest.approx(86 / 84, abs=1e-4),
                                     "to_95": pytest.approx(56 / 84, abs=1e-4)}
    # the live clock: 13 s of screening and 7.5 s a trial, half the table's price of the same work
    assert result["live_clock"]["spent_cpu_s"] == 43 and result["live_clock"]["vs_table_clock"] == pytest.approx(0.5)
    assert [t["clock_s"] for t in result["trial_rows"]] == [20.5, 28, 35.5, 43]
    assert result["dev_hv_vs_exhaustive"] == 1.0
    assert result["own_front"] == {"dev_hv_vs_table_exhaustive": 1.0, "to_95": pytest.approx(56 / 84, abs=1e-4),
                                   "members": sorted(names[n] for n in "ABD")}
    fewer = live_search.summarise(table, screened, 13.0, _trials(table, "ADB"), None, "probe")
    assert "own_front" not in fewer  # C never trained: no live exhaustive front


def test_a_best_student_that_scores_worse_live_keeps_the_search_off_the_front():
    table = hand_table()
    names = {row["name"]: replay.row_label(row) for row in table["students"]}
    screened = {names[n]: SHAPES[n][3] for n in "ADBC"}
    result = live_search.summarise(table, screened, 13.0, _trials(table, "ADBC", {"D": 0.3}), None, "probe")
    # D at 0.3 is dominated by A: the front holds A and B, 0.3 x 900 + 0.2 x 800 = 430 of 500
    assert result["table_clock"]["to_95"] is None and result["dev_hv_vs_exhaustive"] == pytest.approx(0.86)
    assert result["dev_abs_diff_vs_table"] == {"mean": 0.075, "max": 0.3}
    assert result["rank_agreement"] == 1.0
    # against its own exhaustive front (A, B: 430) A alone holds 270 and A, D still 270: 95% needs B, third
    assert result["own_front"]["to_95"] == pytest.approx(71 / 84, abs=1e-4)
    swapped = live_search.summarise(table, {names[n]: 0.0 for n in "DABC"}, 13.0, _trials(table, "DABC"), None, "probe")
    assert swapped["rank_agreement"] == pytest.approx(2 / 3, abs=1e-4)  # one pair of four out of order
