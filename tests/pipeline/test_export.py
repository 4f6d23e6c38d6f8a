"""Export: a round trip on a tiny model of each family (ONNX equals PyTorch, int8 close, the card parses
and carries the scores), latency on every runtime, and the bad inputs (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from transformers import AutoModelForMaskedLM, AutoTokenizer

from pipeline import export as export_module
from pipeline.__main__ import main as cli
from pipeline.card import read_front_matter
from pipeline.config import LatencyConfig
from pipeline.errors import UsageError
from pipeline.export import export
from pipeline.modeling import base_model

FAST = LatencyConfig(seq_len=16, repeats=2, warmup=1)
CARD = {
    "name": "tiny-student", "language": "mt", "license": "mit", "teacher": "FacebookAI/xlm-roberta-base",
    "stages": {"distill": {"settings": {"layers": 2, "init": "stride"}, "outcome": {"loss_end": 3.2}}},
    "tasks": {"pos": {"metric": "accuracy", "dataset": "mt/pos", "dev": 0.81, "test": 0.79, "teacher_dev": 0.93,
                      "teacher_test": 0.92}},
    "latency": [{"runtime": "onnx-int8", "batch": 1, "seq_len": 16, "threads": 1, "ms": 9.0, "teacher_ms": 30.0}],
}


@pytest.fixture(params=["tiny_xlmr", "tiny_bert"])
def tiny(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def maltese_file(tmp_path_factory, maltese_sentences) -> Path:
    path = tmp_path_factory.mktemp("text") / "mt.txt"
    path.write_text("\n".join(maltese_sentences[100:140]) + "\n", encoding="utf-8")
    return path


def hidden_states(folder: Path, graph: str, lines: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ONNX Runtime output, PyTorch output, mask) of ``lines`` as one padded batch."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(lines, padding=True, truncation=True, max_length=48, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    session = ort.InferenceSession(str(folder / graph), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        encoder = base_model(AutoModelForMaskedLM.from_pretrained(folder).eval())
        expected = encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    return got, expected, mask.astype(bool)


def test_export_round_trip(tiny, tmp_path, maltese_file, maltese_sentences):
    out = tmp_path / "deploy"
    summary = export(tiny, out, int8=True, text_file=maltese_file, card=CARD, latency=FAST)
    assert {"README.md", "card.json", "config.json", "model.safetensors", "model.onnx", "model.int8.onnx"} <= set(
        summary["files"])
    assert summary["checks"]["onnx"] <= 1e-4 and summary["checks"]["onnx-int8"] >= 0.99
    # Other sentences, another batch size and sequence length than the export saw: the axes are dynamic.
    for lines in (maltese_sentences[200:203], maltese_sentences[300:307]):
        got, expected, real = hidden_states(out, "model.onnx", lines)
        assert got.shape == expected.shape and np.abs(got[real] - expected[real]).max() <= 1e-4
        got8, expected, real = hidden_states(out, "model.int8.onnx", lines)
        a, b = got8[real], expected[real]
        cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        assert cosine.mean() >= 0.99
    text = (out / "README.md").read_text()
    meta = read_front_matter(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    assert meta["language"] == ["mt"] and meta["license"] == "mit" and meta["base_model"] == CARD["teacher"]
    results = meta["model-index"][0]["results"]
    assert {(r["dataset"]["split"], r["metrics"][0]["value"]) for r in results} == {("validation", 0.81), ("test", 0.79)}
    assert "| pos | accuracy | 0.8100 | 0.7900 | 0.9300 | 0.9200 |" in text  # dev and test, labelled, beside the teacher
    assert "--text" in text and str(maltese_file) in text  # which text the checks ran on
    rows = {row["runtime"]: row for row in summary["latency"]}
    assert set(rows) == {"torch", "onnx", "onnx-int8"} and rows["onnx-int8"]["teacher_ms"] == 30.0
    sizes = json.loads((out / "card.json").read_text())["sizes"]
    assert sizes["total"] == AutoModelForMaskedLM.from_pretrained(out).num_parameters()
    assert sizes["embeddings"] + sizes["layers"] + sizes["head"] == sizes["total"] and sizes["disk_mb"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    umask = os.umask(0)
    os.umask(umask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o666 & ~umask}  # others may read the weights


def test_text_falls_back_to_the_recorded_heldout_then_the_sample(tmp_path, maltese_file):
    lines, origin = export_module.check_text(None, {"heldout": {"source": str(maltese_file)}})
    assert len(lines) == export_module.CHECK_LINES and str(maltese_file) in origin
    lines, origin = export_module.check_text(None, {"heldout": {"source": str(tmp_path / "gone.txt")}})
    assert lines == list(export_module.SAMPLE) and "sample" in origin


def run_cli(args: list[str], capsys) -> tuple[int, list[str]]:
    code = cli(["export", *args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_bad_model_directories_are_one_line_errors(tiny_xlmr, tmp_path, capsys):
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_xlmr, no_weights)
    (no_weights / "model.safetensors").unlink()
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_xlmr, no_tokenizer)
    for name in ("tokenizer.json", "sentencepiece.bpe.model"):
        (no_tokenizer / name).unlink(missing_ok=True)
    for model, problem in ((no_weights, "no weights"), (no_tokenizer, "no tokenizer"), (tmp_path / "nope", "no such")):
        code, err = run_cli(["--model", str(model), "--out", str(tmp_path / "out")], capsys)
        assert code == 2 and len(err) == 1 and problem in err[0] and str(model) in err[0]
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_empty_is_kept_unless_force(tiny_xlmr, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(["--model", str(tiny_xlmr), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and "--force" in err[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert run_cli(["--model", str(tiny_xlmr), "--out", str(out), "--force", "--repeats", "1", "--seq-len", "8"],
                   capsys)[0] == 0
    assert (out / "README.md").is_file() and not (out / "keep.txt").exists()


def test_a_failing_onnx_check_writes_nothing(tiny_xlmr, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="ONNX fp32 graph differs"):
        export(tiny_xlmr, out, onnx=True, atol=0.0, latency=FAST)
    monkeypatch.setattr(export_module, "MIN_COSINE", 1.01)  # no graph can pass: cosine is at most 1
    monkeypatch.setattr(export_module.export, "__kwdefaults__", {**export_module.export.__kwdefaults__,
                                                                  "min_cosine": 1.01})
    code, err = run_cli(["--model", str(tiny_xlmr), "--out", str(out), "--int8"], capsys)
    assert code == 2 and len(err) == 1 and "int8" in err[0] and "nothing was written" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_weights_too_large_for_one_file_go_beside_it(tiny_bert, tmp_path, monkeypatch):
    from pipeline import runtimes

    monkeypatch.setattr(runtimes, "_SINGLE_FILE_BYTES", 0)  # as if the model passed ONNX's 2 GB limit
    summary = export(tiny_bert, tmp_path / "out", int8=True, latency=FAST)
    assert "model.onnx.data" in summary["files"] and summary["checks"]["onnx-int8"] >= 0.99
