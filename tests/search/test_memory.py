"""Memory before a run: each stage's estimated peak in the dry run and the check, what fits a stated device
(search.resources.gpu fractions count), and the one line that stops a run that cannot fit at batch 1."""

from __future__ import annotations

import pytest

from pipeline import memory
from pipeline.config import AdaptConfig, DistillConfig, PruneConfig
from search import teachers
from search.run import main
from tests.search.test_run import REPO, run

MALTESE = str(REPO / "specs" / "maltese.yaml")
TEACHER = dict(teachers.BUILTIN_TEACHER_CONFIGS["FacebookAI/xlm-roberta-base"])
L8 = {**TEACHER, "num_hidden_layers": 8}  # the largest distillation of the Maltese space


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    teachers._hub_config.cache_clear()


def table(out: str) -> dict[str, list[str]]:
    lines = out.split("peak memory per stage")[1].splitlines()[2:]
    return {line[:20].strip(): line[20:].split() for line in lines if line.startswith("  ") and line[2] != " "
            and not line.startswith("  device:")}


def test_dry_run_prints_every_stage_at_the_specs_settings(capsys):
    code, out, err = run([MALTESE, "--dry-run"], capsys)
    assert code == 0
    assert "estimated at the spec's settings on the GPU (bf16 autocast where a stage sets bf16):" in out
    rows = table(out)
    assert list(rows) == ["adapt (teacher)", "evaluate (teacher)", "distill", "prune", "truncate",
                          "trim_vocab (CPU)", "evaluate"]
    adapt = memory.adapt(TEACHER, AdaptConfig(steps=100_000), "cuda")
    distill = memory.distill(L8, TEACHER, DistillConfig(), "cuda")
    prune = memory.prune(L8, PruneConfig(), "cuda")
    assert rows["adapt (teacher)"][:4] == ["teacher.adapt", "32", "x", "512"]
    assert " ".join(rows["adapt (teacher)"][-2:]) == memory.format_bytes(adapt.total)
    assert rows["distill"][:5] == ["distill", "8", "x", "512", "bf16"]
    assert " ".join(rows["distill"][-2:]) == memory.format_bytes(distill.total) == "13.7 GiB"
    assert " ".join(rows["prune"][-2:]) == memory.format_bytes(prune.total)
    assert rows["evaluate"][0] == "evaluation.ner"


def test_device_memory_marks_what_does_not_fit_and_the_largest_batch_that_does(capsys):
    """24 GiB, two trials on one GPU (search.resources.gpu 0.5): a trial has 12 GiB, the distillations do not fit."""
    code, out, _ = run([MALTESE, "--dry-run", "--device-memory", "24GiB"], capsys)
    assert code == 0
    rows = table(out)
    at = lambda b: memory.distill(L8, TEACHER, DistillConfig(), "cuda", batch=b)  # noqa: E731
    batch = memory.largest_batch(at, 12 * 2**30, 8)
    assert 1 <= batch < 8 and at(batch).total <= 12 * 2**30 < at(batch + 1).total
    assert " ".join(rows["distill"][-4:]) == f"no: distill.batch_size {batch} fits"
    assert rows["adapt (teacher)"][-1] == "yes"  # the driver has the whole device
    assert rows["trim_vocab (CPU)"][-2:] == ["host", "memory"]
    assert "device: 24.0 GiB; the driver's stages may use all of it, a trial 12.0 GiB (search.resources.gpu: 0.5)" in out
    code, out, _ = run([MALTESE, "--dry-run", "--device-memory", "24GiB", "--set", "search.resources.gpu=1"], capsys)
    assert code == 0 and table(out)["distill"][-1] == "yes"


def test_the_check_prints_the_table_too(tmp_path, tiny_xlmr, shared_data, capsys):
    from tests.conftest import local_spec

    mt = shared_data / "mt"
    spec = local_spec(tmp_path / "spec.yaml", tiny_xlmr, mt / "raw" / "train.parsemetsv", mt / "raw" / "test.parsemetsv",
                      {"pos": mt / "pos"})
    assert main([str(spec), "--check", "--device-memory", "1GiB"]) == 0
    out = capsys.readouterr().out
    assert "on the CPU (float32):" in out and list(table(out)) == ["adapt (teacher)", "evaluate (teacher)", "distill",
                                                                   "prune", "truncate", "evaluate"]
    assert out.splitlines()[-1] == "no problems found"


def test_a_first_stage_that_cannot_fit_at_batch_1_is_one_line_and_exit_2(capsys):
    """In the order a search runs its stages: at 4 GiB the teacher's adaptation (the whole device) fails
    first; at 6 GiB it fits, but a trial's half of the device does not hold the 8-layer distillation."""
    adapt = memory.adapt(TEACHER, AdaptConfig(steps=100_000), "cuda", batch=1)
    distill = memory.distill(L8, TEACHER, DistillConfig(), "cuda", batch=1)
    assert adapt.total <= 6 * 2**30 < distill.total
    assert adapt.fixed <= 4.9 * 2**30 < adapt.total
    expected = {
        "4GiB": (f"teacher.adapt: adapt (teacher) needs about {memory.format_bytes(adapt.total)} at batch_size 1 x 512 "
                 "tokens (bf16), more than --device-memory 4.0 GiB; the weights, gradients and optimiser state alone "
                 f"need {memory.format_bytes(adapt.fixed)}: give a device with more memory"),
        "4.9GiB": (f"teacher.adapt: adapt (teacher) needs about {memory.format_bytes(adapt.total)} at batch_size 1 x "
                   "512 tokens (bf16), more than --device-memory 4.9 GiB; lower teacher.adapt.max_length or give a "
                   "device with more memory"),
        "6GiB": (f"distill: needs about {memory.format_bytes(distill.total)} at batch_size 1 x 512 tokens (bf16), more "
                 "than a trial's 3.0 GiB of --device-memory 6.0 GiB (search.resources.gpu: 0.5); the weights, "
                 f"gradients and optimiser state alone need {memory.format_bytes(distill.fixed)}: choose smaller "
                 "students (space) or give a device with more memory"),
    }
    for size, line in expected.items():
        for extra in (["--dry-run"], ["--check"], []):
            code, out, err = run([MALTESE, *extra, "--device-memory", size], capsys)
            assert (code, out, err) == (2, "", f"error: {MALTESE}: {line}\n")


def test_an_unparsable_device_memory_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([MALTESE, "--dry-run", "--device-memory", "80 gigs"])
    out, err = capsys.readouterr()
    assert (exit_.value.code, out) == (2, "")
    assert err == ("error: python -m search.run: argument --device-memory: '80 gigs': expected a size such as "
                   "80GiB, 24GB or 16000MiB\n")
