"""Distillation: init strategies, exact copies at 0 steps, falling loss on real Maltese, repeatability."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline import modeling
from pipeline.__main__ import main as cli
from pipeline.config import DistillConfig
from pipeline.distill import distill, init_student, layer_indices
from pipeline.errors import UsageError
from tests.pipeline.helpers import assert_hf_dir

FAST = DistillConfig(steps=30, batch_size=8, max_length=32, lr=1e-3, eval_every=10, bf16=False)


def test_layer_indices():
    assert layer_indices(12, 6, "stride") == [0, 2, 4, 6, 8, 10]
    assert layer_indices(12, 6, "last_k") == [6, 7, 8, 9, 10, 11]
    assert layer_indices(12, 6, "first_k") == [0, 1, 2, 3, 4, 5]
    assert layer_indices(12, 5, "first_last_k") == [0, 1, 2, 10, 11]
    assert layer_indices(4, 4, "stride") == [0, 1, 2, 3]
    assert layer_indices(4, 2, "random") is None
    with pytest.raises(UsageError, match="between 1 and the teacher's 4"):
        layer_indices(4, 5, "stride")


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
@pytest.mark.parametrize("init", ["stride", "last_k", "first_last_k", "random"])
def test_init_copies_named_layers_and_everything_outside(fixture, init, request):
    teacher, _ = modeling.load(request.getfixturevalue(fixture))
    student = init_student(teacher, 2, init)
    indices = layer_indices(4, 2, init)
    for s_index, s_layer in enumerate(modeling.layers(student)):
        t_state = modeling.layers(teacher)[indices[s_index] if indices else 0].state_dict()
        same = all(torch.equal(v, t_state[k]) for k, v in s_layer.state_dict().items())
        assert same == (indices is not None)
    for name in ("word_embeddings", "position_embeddings", "LayerNorm"):
        for a, b in zip(getattr(modeling.embeddings(student), name).parameters(), getattr(modeling.embeddings(teacher), name).parameters()):
            assert torch.equal(a, b)
    assert torch.equal(modeling.lm_head(student).bias, modeling.lm_head(teacher).bias)
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight


def test_random_init_is_seeded_and_leaves_the_global_random_state(tiny_bert):
    teacher, _ = modeling.load(tiny_bert)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = init_student(teacher, 2, "random", seed=5)
    assert torch.equal(torch.rand(3), expected)
    same, other = init_student(teacher, 2, "random", seed=5), init_student(teacher, 2, "random", seed=6)
    state = first.state_dict()
    assert all(torch.equal(tensor, same.state_dict()[name]) for name, tensor in state.items())
    assert any(not torch.equal(tensor, other.state_dict()[name]) for name, tensor in state.items())
    assert first.training and first.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4


def test_steps_zero_cli_writes_exact_copy(tiny_xlmr, shared_data, tmp_path):
    flores = shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn"
    out = tmp_path / "s"
    assert cli(["distill", "--teacher", str(tiny_xlmr), "--layers", "2", "--init", "last_k", "--corpus", str(flores),
                "--out", str(out), "--steps", "0"]) == 0
    student = assert_hf_dir(out)
    teacher, _ = modeling.load(tiny_xlmr)
    for s_layer, t_index in zip(modeling.layers(student), [2, 3]):
        t_state = modeling.layers(teacher)[t_index].state_dict()
        assert all(torch.equal(v, t_state[k]) for k, v in s_layer.state_dict().items())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 0 and metrics["teacher_layers"] == [2, 3]


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_loss_falls_on_maltese(fixture, request, maltese_sentences):
    teacher, tokenizer = modeling.load(request.getfixturevalue(fixture))
    student = init_student(teacher, 2, "stride")
    _, _, metrics = distill(student, teacher, tokenizer, maltese_sentences[:400], maltese_sentences[-40:], FAST)
    assert metrics["steps"] == 30 and metrics["params"] == student.num_parameters()
    assert metrics["loss_end"] < metrics["loss_start"]
    assert metrics["heldout_loss"] < metrics["heldout_loss_start"]


def test_repeatable_and_kl_and_reference_mse(tiny_bert, maltese_sentences):
    teacher, tokenizer = modeling.load(tiny_bert)
    runs = []
    for cfg in (FAST, FAST, DistillConfig(**{**FAST.__dict__, "kd_loss": "kl", "temperature": 2.0}),
                DistillConfig(**{**FAST.__dict__, "mask_padding": False})):
        cfg = DistillConfig(**{**cfg.__dict__, "steps": 5})
        student = init_student(teacher, 2, "stride")
        runs.append(distill(student, teacher, tokenizer, maltese_sentences[:80], maltese_sentences[-16:], cfg)[2])
    assert runs[0]["loss_end"] == runs[1]["loss_end"] and runs[0]["heldout_loss"] == runs[1]["heldout_loss"]
    assert runs[2]["loss_end"] != runs[0]["loss_end"] and runs[3]["loss_end"] != runs[0]["loss_end"]
    assert all(p.requires_grad for p in teacher.parameters())


def test_nan_loss_raises(tiny_bert, maltese_sentences):
    teacher, tokenizer = modeling.load(tiny_bert)
    student = init_student(teacher, 2, "stride")
    with torch.no_grad():
        modeling.lm_head(student).bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan"):
        distill(student, teacher, tokenizer, maltese_sentences[:20], maltese_sentences[-8:], FAST)


def test_second_distillation_into_given_student(tiny_xlmr, shared_data, tmp_path):
    flores = str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn")
    assert cli(["truncate", "--model", str(tiny_xlmr), "--hidden", "16", "--out", str(tmp_path / "t")]) == 0
    assert cli(["distill", "--teacher", str(tiny_xlmr), "--student", str(tmp_path / "t"), "--corpus", flores,
                "--out", str(tmp_path / "d"), "--steps", "3", "--max-length", "32", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["loss_start"] > 0
    assert assert_hf_dir(tmp_path / "d").config.hidden_size == 16


def test_distill_usage_errors(tiny_bert, shared_data, tmp_path):
    flores = str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn")
    base = ["distill", "--teacher", str(tiny_bert), "--corpus", flores, "--out", str(tmp_path / "x"), "--steps", "0"]
    assert cli(base + ["--layers", "6"]) == 2
    assert cli(base) == 2
    (tmp_path / "empty.txt").write_text("\n")
    base[4] = str(tmp_path / "empty.txt")
    assert cli(base + ["--layers", "2"]) == 2


def test_throughput_benchmark_smoke(capsys, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "distill_throughput.py"
    spec = importlib.util.spec_from_file_location("distill_throughput", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.main(["--small", "--steps", "1", "--warmup", "0", "--batch-sizes", "2", "--device", "cpu"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 2 and "1.00x" in table[1]
