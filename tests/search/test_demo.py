"""The demo search end to end at reduced size, on the real pipeline and the synthetic language.

The synthetic teacher is built once per checkout under ``.cache/synthetic`` (a few minutes the first
time); the search itself writes to a temporary MLflow store, Ray folder and stage cache.
"""

from __future__ import annotations

import pytest

from tests.search.test_driver import REPO, child_runs, run_cli

NUM_SAMPLES = 3


@pytest.mark.slow
def test_demo_search_end_to_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    overrides = [
        f"search.num_samples={NUM_SAMPLES}", f"search.storage_path={tmp_path / 'ray'}",
        f"search.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}",
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

    client, parents, children = child_runs(uri, "demo")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["lrl.git_commit"]
    assert {"spec.yaml", "pareto_front.png"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"teacher_quality", "teacher_pos", "teacher_params"} <= set(parent.data.metrics)
    assert len(children) == NUM_SAMPLES and all(r.info.status == "FINISHED" for r in children)
    for run in children:
        metrics = run.data.metrics
        assert {"params", "quality", "test_quality", "test_pos", "sentiment", "topic", "ner", "pos", "drop_quality",
                "drop_quality_rel", "disk_mb", "time_evaluate"} <= set(metrics)
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
