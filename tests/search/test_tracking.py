"""The MLflow sink against a temporary SQLite store: parent/child runs, failures, Pareto tags and
registry, resume without duplicates, and the "already inside a parent run" path."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from search.tracking import Tracker, trial_metrics, ui_command  # noqa: E402

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
    return {"num_hidden_layers": layers, "intermediate_size": 37, "hidden_size": 32,
            "vocab_size": None, "init": "stride"}


def test_trial_metrics_drops_against_teacher():
    result = {"params": 50, "quality": 0.6, "scores": {"pos": 0.8}, "timings": {"prune": 2},
              "disk_mb": 1.0, "latency_ms": float("nan")}
    metrics = trial_metrics(result, {"quality": 0.8, "pos": 0.9, "params": 100})
    assert metrics["params"] == 50 and metrics["pos"] == 0.8 and metrics["time_prune"] == 2
    assert metrics["drop_quality"] == pytest.approx(0.2)
    assert metrics["drop_quality_rel"] == pytest.approx(0.25)
    assert metrics["drop_pos"] == pytest.approx(0.1)
    assert metrics["compression"] == pytest.approx(0.5)
    assert "latency_ms" not in metrics  # NaN is not logged


def test_parent_children_failure_pareto_registry(tmp_path):
    tracker = make_tracker(tmp_path)
    parent = tracker.start(spec_yaml="search:\n  num_samples: 3\n", params={"num_samples": 3}, resume=False)
    tracker.log_teacher({"quality": 0.9, "scores": {"pos": 0.95, "ner": 0.85}, "params": 1000})
    a = tracker.log_trial("t0", candidate(2), fake_result(tmp_path, "a", 0.7, 100))
    b = tracker.log_trial("t1", candidate(3), fake_result(tmp_path, "b", 0.8, 200))
    c = tracker.log_trial("t2", candidate(3), fake_result(tmp_path, "c", 0.6, 300))  # dominated
    f = tracker.log_failure("t3", candidate(4), "Traceback...\nFloatingPointError: loss is nan", attempts=2)
    front = tracker.mark_pareto()
    assert [r["id"] for r in front] == ["t1", "t0"]

    client = MlflowClient(tracker.tracking_uri)
    runs = {r.info.run_id: r for r in client.search_runs([tracker.experiment_id])}
    assert set(runs) == {parent, a, b, c, f}
    for run_id in (a, b, c, f):
        assert runs[run_id].data.tags["mlflow.parentRunId"] == parent
    assert runs[a].data.tags["pareto"] == "true" and runs[b].data.tags["pareto"] == "true"
    assert runs[c].data.tags["pareto"] == "false" and runs[f].data.tags["pareto"] == "false"
    assert runs[f].info.status == "FAILED"
    assert runs[f].data.tags["error"] == "FloatingPointError: loss is nan"
    assert runs[a].data.params["vocab_size"] == "full"
    assert runs[a].data.metrics["drop_quality"] == pytest.approx(0.2)
    assert runs[parent].data.tags["lrl.spec_hash"] == "abc"
    assert runs[parent].data.metrics["teacher_pos"] == pytest.approx(0.95)
    parent_files = {x.path for x in client.list_artifacts(parent)}
    assert {"spec.yaml", "pareto_front.png"} <= parent_files
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        os.path.basename(x.path) for x in client.list_artifacts(a, "model")}
    # Artifacts live under the store's folder.
    assert (tmp_path / "mlflow" / "artifacts").is_dir()

    versions = client.search_model_versions("name = 'lrl-test-student'")
    assert {v.run_id for v in versions} == {a, b}
    model = client.get_registered_model("lrl-test-student")
    assert model.aliases["best-quality"] == next(v.version for v in versions if v.run_id == b)
    assert model.aliases["best-params"] == next(v.version for v in versions if v.run_id == a)
    assert set(model.aliases) == {"pareto-1", "pareto-2", "best-quality", "best-params"}
    best = client.get_model_version_by_alias("lrl-test-student", "best-quality")
    assert best.source.endswith("/model")
    (tmp_path / "dl").mkdir()
    downloaded = client.download_artifacts(best.run_id, "model", str(tmp_path / "dl"))
    assert os.path.exists(os.path.join(downloaded, "config.json"))

    # Idempotent: a second call registers nothing new.
    tracker.mark_pareto()
    assert len(client.search_model_versions("name = 'lrl-test-student'")) == 2

    # A new trial that dominates a: a leaves the front and loses its pareto alias.
    d = tracker.log_trial("t4", candidate(2), fake_result(tmp_path, "d", 0.75, 100))
    front = tracker.mark_pareto()
    assert {r["id"] for r in front} == {"t1", "t4"}
    assert client.get_run(a).data.tags["pareto"] == "false"
    model = client.get_registered_model("lrl-test-student")
    assert a not in {client.get_model_version("lrl-test-student", v).run_id for v in model.aliases.values()}
    assert d in {client.get_model_version("lrl-test-student", v).run_id for v in model.aliases.values()}
    tracker.finish()
    assert client.get_run(parent).info.status == "FINISHED"
    assert "mlflow ui" in ui_command(tracker.tracking_uri)


def test_resume_finds_parent_and_skips_logged_trials(tmp_path):
    tracker = make_tracker(tmp_path)
    parent = tracker.start(spec_yaml="x: 1\n", params={}, resume=False)
    tracker.log_teacher({"quality": 0.9})
    assert tracker.log_trial("t0", candidate(2), fake_result(tmp_path, "a", 0.7, 100)) is not None
    tracker.log_failure("t1", candidate(3), "RuntimeError: boom")
    # A run left half-written by a killed driver.
    client = MlflowClient(tracker.tracking_uri)
    half = client.create_run(tracker.experiment_id, tags={
        "mlflow.parentRunId": parent, "lrl.trial_id": "t2"}).info.run_id

    again = make_tracker(tmp_path)
    assert again.start(spec_yaml="x: 1\n", params={}, resume=True) == parent
    assert again.teacher == {"quality": 0.9}
    assert again.logged("t0") == "FINISHED" and again.logged("t2") == "RUNNING"
    assert again.log_trial("t0", candidate(2), fake_result(tmp_path, "a2", 0.7, 100)) is None
    # A failed trial that succeeds after a resume, and the half-written one, reuse their runs.
    failed_run = again.trial_runs()["t1"].info.run_id
    assert again.log_trial("t1", candidate(3), fake_result(tmp_path, "b", 0.8, 200)) == failed_run
    assert again.log_trial("t2", candidate(3), fake_result(tmp_path, "c", 0.8, 250)) == half
    runs = again.trial_runs()
    assert sorted(runs) == ["t0", "t1", "t2"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    # Another search (different hash) gets its own parent even with resume.
    other = make_tracker(tmp_path, search="demo-def", spec_hash="def")
    assert other.start(spec_yaml="x: 2\n", params={}, resume=True) != parent


def test_already_inside_a_parent_run(tmp_path):
    """A search started inside the caller's active MLflow run nests under it and leaves it open."""
    tracker = make_tracker(tmp_path)
    mlflow.set_tracking_uri(tracker.tracking_uri)
    try:
        with mlflow.start_run(experiment_id=tracker.experiment_id) as outer:
            parent = tracker.start(spec_yaml="x: 1\n", params={}, resume=False)
            tracker.log_trial("t0", candidate(2), fake_result(tmp_path, "a", 0.7, 100))
            tracker.mark_pareto()
            tracker.finish()
            assert mlflow.active_run().info.run_id == outer.info.run_id
        client = MlflowClient(tracker.tracking_uri)
        assert client.get_run(parent).data.tags["mlflow.parentRunId"] == outer.info.run_id
        assert client.get_run(outer.info.run_id).info.status == "FINISHED"
        assert list(tracker.trial_runs()) == ["t0"]
    finally:
        mlflow.set_tracking_uri(None)
