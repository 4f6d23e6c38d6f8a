"""The demo search end to end at reduced size, on the real pipeline and the synthetic language, and the
demo's tasks: each separates its teacher from a random model of the teacher's shape.

The synthetic teacher is built once per checkout under ``.cache/synthetic`` (a few minutes the first
time); the search itself writes to a temporary MLflow store, Ray folder and stage cache.
"""

from __future__ import annotations

import pytest

from pipeline.card import read_front_matter

from tests.search.test_driver import REPO, child_runs, run_cli

NUM_SAMPLES = 3


@pytest.mark.slow
def test_demo_search_end_to_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    overrides = [
        f"search.num_samples={NUM_SAMPLES}", f"search.storage_path={tmp_path / 'ray'}",
        f"search.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}", f"export.out={tmp_path / 'export'}",
        "distill.steps=8", "distill.eval_every=4", "truncate.distill.steps=8", "truncate.distill.eval_every=4",
        "space.layers=[2]", "space.hidden=[64, 128]", "space.ffn=[256, 512]", "space.vocab=[500, full]",
        "evaluation.sentiment.epochs=1", "evaluation.topic.epochs=1", "evaluation.ner.epochs=1",
        "evaluation.pos.epochs=1",
    ]
    args = [str(REPO / "specs" / "demo.yaml")]
    for item in overrides:
        args += ["--set", item]
    proc = run_cli(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Pareto front:" in proc.stdout and "mlflow ui" in proc.stdout
    assert f"{NUM_SAMPLES} trials finished, 0 failed" in proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    # The demo ends by exporting its best-quality student to ONNX int8, latency beside the teacher's.
    assert "Exported best-quality" in proc.stdout
    assert any(line.startswith("latency onnx-int8") and "teacher" in line for line in proc.stdout.splitlines())
    exported = {p.name for p in (tmp_path / "export").iterdir()}
    assert {"model.onnx", "model.int8.onnx", "README.md", "model.safetensors"} <= exported
    meta = read_front_matter((tmp_path / "export" / "README.md").read_text())
    assert meta["license"] == "mit" and meta["language"] == ["alva"]
    assert {r["dataset"]["split"] for r in meta["model-index"][0]["results"]} == {"validation", "test"}

    client, parents, children = child_runs(uri, "demo")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["lrl.git_commit"]
    assert {"spec.yaml", "pareto_front.png"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"teacher_quality", "teacher_pos", "teacher_params", "teacher_latency_ms"} <= set(parent.data.metrics)
    assert "| trial |" in parent.data.tags["mlflow.note.content"]
    assert len(children) == NUM_SAMPLES and all(r.info.status == "FINISHED" for r in children)
    for run in children:
        metrics = run.data.metrics
        assert {"params", "quality", "test_quality", "test_pos", "sentiment", "topic", "ner", "pos", "drop_quality",
                "drop_quality_rel", "disk_mb", "time_evaluate", "latency_ms"} <= set(metrics)
        assert set(run.data.params) >= {"num_hidden_layers", "intermediate_size", "hidden_size", "vocab_size"}
        assert run.data.tags["pareto"] in ("true", "false")
    on_front = [r for r in children if r.data.tags["pareto"] == "true"]
    assert on_front

    versions = client.search_model_versions("name = 'demo-student'")
    # A student registered while on the front keeps its version after it leaves (tag pareto=false).
    assert {v.run_id for v in versions if v.tags["pareto"] == "true"} == {r.info.run_id for r in on_front}
    best = client.get_model_version_by_alias("demo-student", "best-quality")
    local = client.download_artifacts(best.run_id, "model", str(tmp_path))
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(local)
    tokenizer = AutoTokenizer.from_pretrained(local)
    run = client.get_run(best.run_id)
    assert model.config.num_hidden_layers == int(run.data.params["num_hidden_layers"])
    assert model.num_parameters() > 0 and len(tokenizer("le doma")["input_ids"]) > 2
    assert (tmp_path / "mlflow" / "artifacts").is_dir()


@pytest.mark.slow
def test_demo_tasks_separate_the_teacher_from_a_random_model(tmp_path):
    """With the demo's own evaluation settings, every task scores the pretrained teacher clearly above a
    random model of its shape, and below the task's ceiling (measured: sentiment 0.78 / 0.69, topic
    0.77 / 0.62, NER 0.69 / 0.47, POS 0.79 / 0.73)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from pipeline.evaluate import evaluate_task
    from search.prepare import materialise_synthetic
    from search.spec import load_spec

    torch.set_num_threads(1)
    spec = materialise_synthetic(load_spec(REPO / "specs" / "demo.yaml"))
    teacher = spec.teacher.model
    random_dir = tmp_path / "random"
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(teacher)
    type(model)(model.config).save_pretrained(random_dir)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(random_dir)
    for task, source in spec.data.tasks.items():
        trained = evaluate_task(teacher, task, source, spec.evaluation)["dev_mean"]
        untrained = evaluate_task(str(random_dir), task, source, spec.evaluation)["dev_mean"]
        assert trained >= untrained + 0.03, (task, trained, untrained)
        assert trained < 0.97, (task, trained)  # not at the ceiling, so students can differ
