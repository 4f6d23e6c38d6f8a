"""The replay of search strategies against a table: its clock, its strategies on a hand-made table whose
answers are worked out below, and its bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_benchmark_table import ENV, TASKS, _model

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks")]

import analyse_table  # noqa: E402
import replay  # noqa: E402

# name: (layers, hidden, params, dev quality)
SHAPES = {"A": (2, 52, 100, 0.3), "B": (2, 76, 200, 0.5), "C": (3, 52, 150, 0.2), "D": (3, 76, 300, 0.6)}


def _student(name: str, probe: dict[str, float]) -> dict:
    layers, hidden, params, dev = SHAPES[name]
    row = _model(name, params, dev, [1] * 40, space=True, paper=name == "B", paper_name="path" if name == "B" else None)
    row["test"] = {t: dev for t in TASKS}
    row["candidate"] = {"num_hidden_layers": layers, "intermediate_size": 171, "hidden_size": hidden,
                        "vocab_size": None, "init": "stride"}
    # a depth distillation both students of a depth share (10 s), then each one's own builds: 1 s at
    # rung 0, 2 s more to rung 100, 3 s more to rung 200; a full evaluation costs 10 s (`_model`)
    row["rung_paths"] = {"0": [f"depth{layers}", f"{name}0"], "100": [f"depth{layers}", f"{name}100"],
                         "200": [f"depth{layers}", f"{name}200"]}
    row["signals"] = {"probe": probe}
    row["signal_cost_s"] = {"probe": {"0": 0.5, "100": 0.5}}
    return row


def hand_table(probe=None) -> dict:
    """Four students; a probe equal to dev quality at every rung unless ``probe`` says otherwise."""
    probe = probe or {}
    students = [_student(n, probe.get(n, {"0": SHAPES[n][3], "100": SHAPES[n][3]})) for n in SHAPES]
    builds = {"depth2": 10.0, "depth3": 10.0}
    for n in SHAPES:
        builds.update({f"{n}0": 1.0, f"{n}100": 2.0, f"{n}200": 3.0})
    space = {"layers": [2, 3], "ffn": [171], "hidden": [52, 76], "vocab": ["full"], "init": ["stride"]}
    random = _model("random", 1000, 0.0, [0] * 40)
    random["test"] = {t: 0.0 for t in TASKS}
    return {"tool": analyse_table.TOOL, "version": 1, "fingerprint": {"settings": {"space": space}},
            "signals": {"probe": "max"}, "rungs": [0, 100, 200], "students": students, "builds": builds,
            "teacher": _model("teacher", 1000, 0.9, [1] * 40), "random": random, "scratch": [], "runs": []}


def _strategy(table, name):
    return next(s for s in replay.strategies(table) if s.name == name)


def test_the_clock_pays_a_shared_build_once_and_every_rung_below():
    table = hand_table()
    clock = replay.Clock(table)
    a, b = table["students"][:2]
    clock.build(a, 100)
    assert clock.spent == 10 + 1 + 2  # depth, rung 0, rung 100
    clock.build(b, 0)
    assert clock.spent == 13 + 1  # the depth is paid already
    clock.build(a, 200)
    assert clock.spent == 14 + 3


def test_hypervolume_and_costs_of_the_hand_table():
    measure = replay.Measure(hand_table())
    # minimised points (-quality, params) against (0, 1000): A covers 0.3 x 900, D 0.3 more x 700,
    # B 0.2 more x 100; C is dominated by A
    assert measure.exhaustive_dev == pytest.approx(270 + 210 + 20)
    assert measure.exhaustive_cost == 20 + 4 * 6 + 4 * 10
    assert measure.paper_cost == 10 + 6 + 10  # B alone


def test_screening_trains_in_the_signals_order_and_reaches_the_front_early():
    table = hand_table()
    spec = replay.replay_spec(table, None, [])
    run = replay.replay(table, spec, _strategy(table, "screen-probe"), seed=0)
    # rung 0 for all (20 + 4 + 4 x 0.5 = 26 s), then by (probe, params): A and D (the ends), B, C
    assert [row["name"] for _, row in run.evaluated] == ["A", "D", "B", "C"]
    assert [clock for clock, _ in run.evaluated] == [26 + 15, 26 + 30, 26 + 45, 26 + 60]
    summary = replay.Measure(table).summary(run)
    assert summary["to_95"] == pytest.approx(56 / 84, abs=1e-4)  # A and D hold 480 of 500 (0.96)
    # a probe that ranks D last: D comes after B and C, 95% only with all four, and the screening on top
    late = hand_table({"D": {"0": 0.0, "100": 0.0}})
    run = replay.replay(late, spec, _strategy(late, "screen-probe"), seed=0)
    assert [row["name"] for _, row in run.evaluated] == ["A", "B", "C", "D"]
    assert replay.Measure(late).summary(run)["to_95"] == pytest.approx(86 / 84, abs=1e-4)


@pytest.mark.parametrize("sampler", ["random", "nsga2", "tpe"])
def test_a_full_fidelity_search_evaluates_every_candidate_once(sampler):
    table = hand_table()
    spec = replay.replay_spec(table, None, [])
    run = replay.replay(table, spec, _strategy(table, f"full-{sampler}"), seed=3)
    assert sorted(row["name"] for _, row in run.evaluated) == ["A", "B", "C", "D"]
    assert run.spent == replay.Measure(table).exhaustive_cost and run.stopped == 0


def test_halving_follows_the_searchs_scheduler():
    table = hand_table()
    spec = replay.replay_spec(table, None, [])
    run = replay.replay(table, spec, _strategy(table, "halving0-probe"), seed=0)
    assert run.stopped + len(run.evaluated) == 4 and run.stopped >= 1  # 1 of 3 go on at each rung
    assert run.spent < replay.Measure(table).exhaustive_cost
    # the first trial at a rung always goes on: it is evaluated first, having paid its depth (10 s), its
    # builds (1 + 2 + 3 s), the probe at rungs 0 and 100 (2 x 0.5 s) and its full evaluation (10 s)
    assert run.evaluated[0][0] == 27


def test_the_command_prints_the_table_and_the_default(tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(hand_table()), encoding="utf-8")
    out = tmp_path / "replay.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "replay.py"), "--table", str(path), "--seeds", "2",
                           "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    result = json.loads(out.read_text())
    default = result["default"]
    assert last == (f"default: {default} reaches 95% of the exhaustive dev hypervolume at "
                    f"{result['strategies'][default]['to_95_median']:.3f} of the exhaustive cost (median of 2 seeds)")
    assert result["strategies"]["screen-probe"]["to_95_median"] == pytest.approx(56 / 84, abs=1e-4)


def test_a_table_from_another_space_is_refused_in_one_line(tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(hand_table()), encoding="utf-8")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "replay.py"), "--table", str(path),
                           "--spec", str(REPO / "specs" / "maltese.yaml")], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "space.layers" in line and "another space" in line and not (tmp_path / "replay.json").exists()
