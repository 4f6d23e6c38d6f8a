"""The MLflow sink against a temporary SQLite store: parent/child runs, failures, Pareto tags and
registry, reading records back on resume, and the "already inside a parent run" path."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from search.book import aliases, trial_metrics  # noqa: E402
from search.tracking import Tracker, ui_command  # noqa: E402

OBJECTIVES = [("quality", "max"), ("params", "min")]


def make_tracker(tmp_path, search="demo-abc", spec_hash="abc"):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    return Tracker(uri, "lrl-test", search=search, spec_hash=spec_hash, objectives=OBJECTIVES,
                   registered_model="lrl-test-student")


def fake_result(tmp_path, name, quality, params):
    model_dir = tmp_path / "models" / name
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    (model_dir / "model.safetensors").write_bytes(b"weights")
    (model_dir / "tokenizer.json").write_text("{}")
    return {
        "model_dir": str(model_dir), "params": params, "disk_mb": params / 1e6, "quality": quality,
        "scores": {"pos": quality + 0.05, "ner": quality - 0.05},
        "timings": {"distill": 1.5, "evaluate": 2.0},
        "config": {"num_hidden_layers": 2, "hidden_size": 32},
    }


def candidate(layers):
    return {"num_hidden_layers": layers, "intermediate_size": 37, "hidden_size": 32, "vocab_size": None, "init": "stride"}


def log(tracker, tmp_path, trial_id, layers, quality, params, pareto=False, **kwargs):
    result = fake_result(tmp_path, trial_id, quality, params)
    return tracker.log_trial(trial_id, candidate(layers), result, trial_metrics(result, tracker.teacher),
                             name=f"{trial_id} L{layers}", feasible=True, pareto=pareto, **kwargs)


def test_trial_metrics_drops_against_teacher():
    result = {"params": 50, "quality": 0.6, "scores": {"pos": 0.8}, "timings": {"prune": 2},
              "disk_mb": 1.0, "latency_ms": float("nan"), "test_quality": 0.55, "test_scores": {"pos": 0.75}}
    metrics = trial_metrics(result, {"quality": 0.8, "pos": 0.9, "params": 100, "test_quality": 0.7})
    assert metrics["test_pos"] == 0.75 and metrics["test_quality"] == 0.55
    assert metrics["drop_test_quality"] == pytest.approx(0.15)
    assert metrics["params"] == 50 and metrics["pos"] == 0.8 and metrics["time_prune"] == 2
    assert metrics["drop_quality"] == pytest.approx(0.2)
    assert metrics["drop_quality_rel"] == pytest.approx(0.25)
    assert metrics["drop_pos"] == pytest.approx(0.1)
    assert metrics["compression"] == pytest.approx(0.5)
    assert "latency_ms" not in metrics  # NaN is not logged


def test_parent_children_failure_tags_and_registry(tmp_path):
    tracker = make_tracker(tmp_path)
    parent = tracker.start(spec_yaml="search:\n  num_samples: 3\n", params={"num_samples": 3}, resume=False)
    tracker.log_teacher({"quality": 0.9, "pos": 0.95, "ner": 0.85, "params": 1000})
    a = log(tracker, tmp_path, "t0", 2, 0.7, 100, pareto=True)
    b = log(tracker, tmp_path, "t1", 3, 0.8, 200, pareto=True)
    c = log(tracker, tmp_path, "t2", 3, 0.6, 300)
    f = tracker.log_failure("t3", candidate(4), "Traceback...\nFloatingPointError: loss is nan", name="t3", attempts=2)
    members = [{"id": "t1", "run_id": b, "metrics": {"quality": 0.8, "params": 200}},
               {"id": "t0", "run_id": a, "metrics": {"quality": 0.7, "params": 100}}]
    tracker.register(members, aliases(members, tracker.objectives, renumber=True), renumber=True)

    client = MlflowClient(tracker.tracking_uri)
    runs = {r.info.run_id: r for r in client.search_runs([tracker.experiment_id])}
    assert set(runs) == {parent, a, b, c, f}
    for run_id in (a, b, c, f):
        assert runs[run_id].data.tags["mlflow.parentRunId"] == parent
    assert runs[a].data.tags["pareto"] == "true" and runs[c].data.tags["pareto"] == "false"
    assert runs[f].info.status == "FAILED" and runs[f].data.tags["pareto"] == "false"
    assert runs[f].data.tags["error"] == "FloatingPointError: loss is nan"
    assert runs[a].data.params["vocab_size"] == "full"
    assert runs[a].data.metrics["drop_quality"] == pytest.approx(0.2)
    assert runs[parent].data.tags["lrl.spec_hash"] == "abc"
    assert runs[parent].data.metrics["teacher_pos"] == pytest.approx(0.95)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        os.path.basename(x.path) for x in client.list_artifacts(a, "model")}
    assert (tmp_path / "mlflow" / "artifacts").is_dir()

    versions = client.search_model_versions("name = 'lrl-test-student'")
    assert {v.run_id for v in versions} == {a, b}
    model = client.get_registered_model("lrl-test-student")
    by_run = {v.run_id: v.version for v in versions}
    assert model.aliases == {"pareto-1": by_run[b], "pareto-2": by_run[a], "best-quality": by_run[b],
                             "best-params": by_run[a]}
    (tmp_path / "dl").mkdir()
    best = client.get_model_version_by_alias("lrl-test-student", "best-quality")
    assert os.path.exists(os.path.join(client.download_artifacts(best.run_id, "model", str(tmp_path / "dl")), "config.json"))

    # a leaves the front: its run and version are re-tagged, its pareto alias goes at the renumbering
    d = log(tracker, tmp_path, "t4", 2, 0.75, 100, pareto=True)
    tracker.set_pareto({a: False})
    members = [members[0], {"id": "t4", "run_id": d, "metrics": {"quality": 0.75, "params": 100}}]
    tracker.register(members, aliases(members, tracker.objectives, renumber=True), renumber=True)
    assert client.get_run(a).data.tags["pareto"] == "false"
    assert client.get_model_version("lrl-test-student", by_run[a]).tags["pareto"] == "false"
    model = client.get_registered_model("lrl-test-student")
    assert set(model.aliases) == {"pareto-1", "pareto-2", "best-quality", "best-params"}
    assert by_run[a] not in model.aliases.values()
    tracker.plot([{"failed": False, "pareto": True, "metrics": {"quality": 0.7, "params": 100}}])
    assert "pareto_front.png" in {x.path for x in client.list_artifacts(parent)}
    tracker.finish()
    assert client.get_run(parent).info.status == "FINISHED"
    assert "mlflow ui" in ui_command(tracker.tracking_uri)
    url = ui_command(tracker.tracking_uri, tracker.experiment_id).splitlines()[-1]
    assert url.endswith(f"/#/experiments/{tracker.experiment_id}?workflowType=machine_learning")


def test_resume_reads_records_and_completes_runs_in_place(tmp_path):
    tracker = make_tracker(tmp_path)
    parent = tracker.start(spec_yaml="x: 1\n", params={}, resume=False)
    tracker.log_teacher({"quality": 0.9})
    log(tracker, tmp_path, "t0", 2, 0.7, 100, pareto=True)
    failed = tracker.log_failure("t1", candidate(3), "RuntimeError: boom", name="t1")
    client = MlflowClient(tracker.tracking_uri)  # a run left half-written by a killed driver
    half = client.create_run(tracker.experiment_id, tags={"mlflow.parentRunId": parent, "lrl.trial_id": "t2"}).info.run_id

    again = make_tracker(tmp_path)
    assert again.start(spec_yaml="x: 1\n", params={}, resume=True) == parent
    assert again.teacher == {"quality": 0.9}
    records = {r["id"]: r for r in again.read_records()}
    assert set(records) == {"t0", "t1", "t2"}
    assert records["t0"]["finished"] and not records["t0"]["failed"] and records["t0"]["pareto"]
    assert records["t0"]["metrics"]["quality"] == 0.7
    assert records["t1"]["failed"] and not records["t2"]["finished"]
    assert log(again, tmp_path, "t1", 3, 0.8, 200, run_id=failed) == failed
    assert log(again, tmp_path, "t2", 3, 0.8, 250, run_id=half) == half
    assert all(r["finished"] and not r["failed"] for r in again.read_records())
    other = make_tracker(tmp_path, search="demo-def", spec_hash="def")
    assert other.start(spec_yaml="x: 2\n", params={}, resume=True) != parent


def test_already_inside_a_parent_run(tmp_path):
    """A search started inside the caller's active MLflow run nests under it and leaves it open."""
    tracker = make_tracker(tmp_path)
    mlflow.set_tracking_uri(tracker.tracking_uri)
    try:
        with mlflow.start_run(experiment_id=tracker.experiment_id) as outer:
            parent = tracker.start(spec_yaml="x: 1\n", params={}, resume=False)
            log(tracker, tmp_path, "t0", 2, 0.7, 100)
            tracker.finish()
            assert mlflow.active_run().info.run_id == outer.info.run_id
        client = MlflowClient(tracker.tracking_uri)
        assert client.get_run(parent).data.tags["mlflow.parentRunId"] == outer.info.run_id
        assert client.get_run(outer.info.run_id).info.status == "FINISHED"
        assert [r["id"] for r in tracker.read_records()] == ["t0"]
    finally:
        mlflow.set_tracking_uri(None)
