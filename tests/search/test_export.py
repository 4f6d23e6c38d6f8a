"""Students in MLflow as a person meets them: a card in the model artifact, a transformers-flavour model
that the registry's aliases load with MLflow's own loader, the experiment and the parent's description
for the UI, and ``python -m search.export`` from a run or an alias (and its bad inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.card import read_front_matter
from pipeline.config import Candidate
from search.book import TrialBook
from search.driver import pareto_markdown
from search.export import main as export_cli


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_xlmr, maltese_sentences):
    """A search of two trials on the tiny model, logged through the real tracker into SQLite."""
    from search.tracking import Tracker

    folder = tmp_path_factory.mktemp("mlflow")
    heldout = folder / "heldout.txt"
    heldout.write_text("\n".join(maltese_sentences[:50]) + "\n", encoding="utf-8")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    card = {"language": "mt", "license": "mit", "teacher": "FacebookAI/xlm-roberta-base",
            "latency": {"runtime": "onnx-int8", "batch": 1, "seq_len": 16, "threads": 1, "repeats": 2, "warmup": 1},
            "heldout": {"source": str(heldout)}}
    tracker = Tracker(uri, "exp", search="s", spec_hash="h", objectives=[("quality", "max"), ("params", "min")],
                      registered_model="exp-student", card=card)
    tracker.start(spec_yaml="x: 1\n", params={}, resume=False)
    tracker.log_teacher({"quality": 0.9, "pos": 0.9, "test_pos": 0.88, "params": 278_295_186, "latency_ms": 50.0})
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=2)
    for trial, (quality, params) in {"t1": (0.7, 40_000), "t2": (0.5, 30_000)}.items():
        result = {"model_dir": str(tiny_xlmr), "quality": quality, "test_quality": quality - 0.02, "params": params,
                  "scores": {"pos": quality}, "test_scores": {"pos": quality - 0.02}, "latency_ms": 2.0,
                  "tasks": {"pos": {"metric": "accuracy", "data": "mt/pos"}},
                  "config": {"num_hidden_layers": 4, "hidden_size": 32, "intermediate_size": 37, "vocab_size": 300}}
        book.finished(trial, Candidate(4, 37, 32), {"result_json": json.dumps(result), "feasible": 1})
    members = book.finalise()
    tracker.describe(pareto_markdown(members, book.objectives, tracker.teacher))
    tracker.finish()
    return uri, tracker, book


def test_students_load_from_the_registry_with_mlflows_loader(store):
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    uri, tracker, book = store
    with _use_tracking_uri(uri):  # the registry follows the tracking URI; both are restored afterwards
        pipe = mlflow.transformers.load_model("models:/exp-student@pareto-1")
    assert pipe.task == "fill-mask" and pipe.model.config.num_hidden_layers == 4
    predictions = pipe(f"Il-belt {pipe.tokenizer.mask_token} ta' Malta.")
    assert len(predictions) == 5 and all(0 <= p["score"] <= 1 for p in predictions)
    best = tracker.client.get_model_version_by_alias("exp-student", "best-quality")
    assert best.run_id == book.records["t1"]["run_id"] and best.source.startswith("models:/")


def test_each_run_carries_its_card_and_the_ui_opens_on_the_runs(store, tmp_path):
    _, tracker, book = store
    client = tracker.client
    run_id = book.records["t1"]["run_id"]
    folder = Path(client.download_artifacts(run_id, "model", str(tmp_path)))
    text = (folder / "README.md").read_text(encoding="utf-8")
    meta = read_front_matter(text)
    assert meta["base_model"] == "FacebookAI/xlm-roberta-base" and meta["license"] == "mit"
    values = {r["dataset"]["split"]: r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]}
    assert values == {"validation": 0.7, "test": 0.68}
    assert "| pos | accuracy | 0.7000 | 0.6800 | 0.9000 | 0.8800 |" in text
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    description = client.get_run(tracker.parent_id).data.tags["mlflow.note.content"]
    assert "| trial |" in description and "test_quality" in description and "| teacher |" in description


def test_export_from_an_alias_and_a_run(store, tmp_path, capsys):
    uri, _, book = store
    out = tmp_path / "out"
    assert export_cli(["--tracking-uri", uri, "--alias", "best-quality", "--out", str(out), "--int8"]) == 0
    printed = capsys.readouterr().out
    assert "best-quality" in printed and "onnx-int8" in printed
    assert {"README.md", "model.onnx", "model.int8.onnx", "model.safetensors"} <= {p.name for p in out.iterdir()}
    text = (out / "README.md").read_text()
    assert "| pos | accuracy | 0.7000 | 0.6800 |" in text and "held-out text of the search" in text
    run_out = tmp_path / "run"
    assert export_cli(["--tracking-uri", uri, "--run", book.records["t2"]["run_id"], "--out", str(run_out)]) == 0
    text = (run_out / "README.md").read_text()
    assert "| pos | accuracy | 0.5000 | 0.4800 |" in text
    assert "| onnx-int8 | 1 | 16 | 1 | 2.00 | 50.00 | 25.0x |" in text  # the search's measurement is kept


@pytest.mark.parametrize("which, problem", [(["--alias", "pareto-9"], "no such alias"),
                                            (["--run", "0123456789abcdef"], "no such run"),
                                            (["--alias", "pareto-1", "--model-name", "nope"], "no such alias"),
                                            (["--alias", "pareto-1", "--out", "{full}"], "--force")])
def test_export_of_what_does_not_exist_is_one_line(store, tmp_path, capsys, which, problem):
    uri, _, _ = store
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    which = [item.format(full=full) for item in which]
    out = [] if "--out" in which else ["--out", str(tmp_path / "out")]
    assert export_cli(["--tracking-uri", uri, *which, *out]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and problem in err[0]
    assert not (tmp_path / "out").exists() and [p.name for p in full.iterdir()] == ["keep.txt"]
