"""Candidates of a space and their exact sizes, from the teacher's config.json alone."""

from __future__ import annotations

import pytest

from pipeline.config import Candidate
from search.schema import Constraints, Spec
from search.space import (
    SizedCandidate,
    candidates,
    choices,
    constraint_violations,
    format_build_summary,
    format_size_table,
    halving_steps,
    label,
    size_table,
    student_parameters,
    to_candidate,
    to_params,
)
from search.teachers import BUILTIN_TEACHER_CONFIGS
from tests.search.test_spec import MBERT, XLMR_BASE


def make_spec(**sections) -> Spec:
    data = {
        "language": "mt",
        "teacher": {"model": "FacebookAI/xlm-roberta-base"},
        "data": {"corpus": {"source": "hf:c/c"}, "heldout": {"source": "hf:h/h"}, "tasks": {"pos": {"source": "hf:p/p"}}},
    }
    data.update(sections)
    return Spec.model_validate(data)


def size(config, layers, hidden, ffn, vocab=None) -> int:
    return student_parameters(config, Candidate(num_hidden_layers=layers, intermediate_size=ffn, hidden_size=hidden, vocab_size=vocab))


@pytest.mark.parametrize("source", ["written", "builtin"])
def test_reference_sizes_xlmr(source):
    config = XLMR_BASE if source == "written" else BUILTIN_TEACHER_CONFIGS["FacebookAI/xlm-roberta-base"]
    assert size(config, 12, 768, 3072) == 278_295_186
    assert size(config, 6, 768, 3072) == 235_767_954
    assert size(config, 6, 768, 2048) == 226_324_626
    assert size(config, 6, 312, 2048) == 88_543_314
    assert size(config, 6, 312, 2048, 40_000) == 22_812_688


@pytest.mark.parametrize("source", ["written", "builtin"])
def test_reference_sizes_mbert(source):
    config = MBERT if source == "written" else BUILTIN_TEACHER_CONFIGS["google-bert/bert-base-multilingual-cased"]
    assert size(config, 12, 768, 3072) == 177_974_523
    assert size(config, 6, 768, 3072) == 135_447_291
    assert size(config, 6, 768, 2048) == 126_003_963
    assert size(config, 6, 312, 2048) == 47_710_587


def test_candidates_are_the_product_of_the_choices():
    spec = make_spec(space={"layers": [4, 6], "ffn": [2048], "hidden": [312, 768], "vocab": [40000, "full", 250002],
                            "init": ["stride", "last_k"]})
    found = candidates(spec, XLMR_BASE)
    assert len(found) == 2 * 1 * 2 * 3 * 2
    assert found[0] == Candidate(num_hidden_layers=4, intermediate_size=2048, hidden_size=312, vocab_size=40000, init="stride")
    assert found[1].init == "last_k"
    # "full" and a vocabulary as large as the teacher's both keep the whole vocabulary
    assert [c.vocab_size for c in found[:6:2]] == [40000, None, None]


def test_choices_params_candidates_and_labels():
    spec = make_spec(space={"vocab": [10000, "full"], "init": ["last_k"]})
    assert choices(spec) == {"layers": (6,), "ffn": (2048,), "hidden": (564, 456, 312), "vocab": (10000, "full"),
                             "init": ("last_k",)}
    sample = {"layers": 6, "ffn": 2048, "hidden": 312, "vocab": "full", "init": "last_k"}
    assert to_candidate(sample) == Candidate(6, 2048, 312, None, "last_k")
    assert to_candidate({**sample, "vocab": 10000}).vocab_size == 10000
    for candidate in candidates(spec, XLMR_BASE):
        assert to_candidate(to_params(candidate)) == candidate
    assert label(Candidate(6, 2048, 312, None, "last_k")) == "L6-F2048-H312-Vfull-last_k"
    assert label(Candidate(6, 2048, 312, 40000)) == "L6-F2048-H312-V40000-stride"


def test_constraint_violations():
    limits = Constraints(max_params=10, min_quality=0.5, max_latency_ms=4.0)
    assert constraint_violations(limits, {"params": 10, "quality": 0.5, "latency_ms": 4.0}) == []
    assert constraint_violations(limits, {"params": 11, "quality": 0.4, "latency_ms": 5.0}) == [
        "params > max_params=10", "quality < min_quality=0.5", "latency_ms > max_latency_ms=4"]
    assert constraint_violations(limits, {"params": 11}) == ["params > max_params=10"]
    assert constraint_violations(Constraints(), {"params": 10**12}) == []


def test_size_table_marks_what_breaks_a_constraint():
    spec = make_spec(space={"hidden": [312, 768], "vocab": [40000, "full"]}, constraints={"max_params": 100_000_000})
    rows = size_table(spec, XLMR_BASE)
    assert [row.params for row in rows] == [22_812_688, 88_543_314, 64_833_088, 226_324_626]
    assert [bool(row.violations) for row in rows] == [False, False, False, True]
    assert rows[0].compression == pytest.approx(1 - 22_812_688 / 278_295_186)
    assert isinstance(rows[0], SizedCandidate)


def test_format_size_table():
    spec = make_spec(space={"hidden": [312, 768], "vocab": [40000, "full"]}, constraints={"max_params": 100_000_000})
    text = format_size_table(spec, XLMR_BASE, size_table(spec, XLMR_BASE))
    lines = text.splitlines()
    assert lines[0].startswith("teacher FacebookAI/xlm-roberta-base (xlmr): 12 layers")
    assert lines[0].endswith("278,295,186 parameters")
    assert lines[1].split() == ["#", "layers", "ffn", "hidden", "vocab", "parameters", "compression"]
    assert lines[2].split() == ["1", "6", "2048", "312", "40000", "22,812,688", "91.8%"]
    assert lines[5].split()[:7] == ["4", "6", "2048", "768", "full", "226,324,626", "18.7%"]
    assert lines[5].endswith("x params > max_params=100,000,000")
    assert len(lines) == 2 + 4 + 1
    assert lines[-1].startswith("4 candidates, 3 within constraints (max_params=100,000,000); smallest L6-F2048-H312-V40000-stride 22,812,688")
    assert "largest L6-F2048-H768-Vfull-stride 226,324,626" in lines[-1]


def test_init_column_only_when_it_varies():
    spec = make_spec(space={"hidden": [312], "init": ["stride", "last_k"]})
    lines = format_size_table(spec, XLMR_BASE, size_table(spec, XLMR_BASE)).splitlines()
    assert "init" in lines[1].split() and lines[3].split()[5] == "last_k"


def test_sizes_equal_num_parameters_of_the_built_model():
    """The formula against transformers itself, for tiny configs of both families (no download)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForMaskedLM

    torch.manual_seed(0)
    teachers = {
        "xlm-roberta": {"model_type": "xlm-roberta", "hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
                        "intermediate_size": 64, "vocab_size": 301, "max_position_embeddings": 66, "type_vocab_size": 1},
        "bert": {"model_type": "bert", "hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
                 "intermediate_size": 64, "vocab_size": 299, "max_position_embeddings": 64, "type_vocab_size": 2},
    }
    for teacher in teachers.values():
        spec = make_spec(space={"layers": [2], "ffn": [37], "hidden": [16, 48], "vocab": [100, "full"]})
        for candidate in candidates(spec, teacher):
            sizes = {"num_hidden_layers": candidate.num_hidden_layers, "intermediate_size": candidate.intermediate_size,
                     "hidden_size": candidate.hidden_size, "vocab_size": candidate.vocab_size or teacher["vocab_size"]}
            kwargs = {k: v for k, v in {**teacher, **sizes}.items() if k != "model_type"}
            model = AutoModelForMaskedLM.from_config(AutoConfig.for_model(teacher["model_type"], **kwargs))
            assert model.num_parameters() == student_parameters(teacher, candidate), candidate


def test_build_summary_counts_shared_stage_builds():
    # trimming first: both depths distil from one trimmed teacher, so the trim is built once
    spec = make_spec(space={"layers": [4, 6], "ffn": [2048], "hidden": [312], "vocab": [40000]},
                     stages={"order": ["trim_vocab", "distill", "prune", "truncate"]})
    lines = format_build_summary(spec, XLMR_BASE, size_table(spec, XLMR_BASE)).splitlines()
    assert lines[0] == "stage builds for 2 candidates within constraints: 7 with reuse, 8 without"
    assert [line.split()[0] for line in lines[2:]] == ["trim_vocab", "distill", "prune", "truncate", "evaluate"]
    assert lines[2].split()[1:2] == ["1"] and lines[3].split()[1:2] == ["2"]


def test_cost_of_a_search_with_and_without_fidelity():
    from search.space import format_cost

    spec = make_spec(space={"layers": [6], "ffn": [2048], "hidden": [312, 456], "vocab": ["full"]},
                     distill={"steps": 1000, "batch_size": 8, "max_length": 128},
                     truncate={"distill": {"steps": 2000}},
                     search={"num_samples": 2, "fidelity": {"min_steps": 100, "max_steps": 2000, "reduction_factor": 4}})
    lines = format_cost(spec, XLMR_BASE, size_table(spec, XLMR_BASE), throughput=1024).splitlines()
    assert lines[0] == "cost in distillation steps (a step: at most 8 x 1 x 128 = 1,024 tokens):"
    # one depth distillation (1,000 steps) shared, two truncations (2,000 each): 5,000 with reuse, 6,000 without
    assert lines[1] == "  every candidate: 3 builds, 5,000 steps with reuse, 6,000 without"
    assert lines[2] == "  2 sampled trials, last distillations in full: about 4,000 steps"
    # rungs 100, 400, 2000 (1,600 is within a factor of 4 of the top); the halving estimate is
    # `halving_steps`'s, plus the one depth distillation (1,000 steps) every trial needs
    expected = halving_steps(2, (100, 400, 2000), 4)
    assert lines[3] == (f"  with search.fidelity (rungs 100, 400, 2000; factor 4; ranked below the top by probe): about "
                        f"{expected:,.0f} steps of last "
                        f"distillations ({expected / 4000:.0%} of 2 x 2,000; the asynchronous rule over random arrival "
                        f"orders), and the distillations before them, which halving never shortens: at most 1,000 steps; "
                        f"{expected + 1000:,.0f} in all")
    assert lines[4] == "  at 1,024 tokens/s: at most 1.4 h for every candidate's builds, one at a time"
    assert format_cost(make_spec(), XLMR_BASE, size_table(make_spec(), XLMR_BASE)).startswith("cost: the distillation")


def test_the_halving_estimate_follows_the_asynchronous_rule():
    # one trial always goes all the way; a second goes on past a rung only when it dominates the first
    # (a quarter of random pairs: with two trials one continues, and the first wins a tie of the front)
    assert halving_steps(1, (100, 400, 2000), 4) == 2000
    assert halving_steps(2, (100, 400, 2000), 4, draws=4000) == pytest.approx(2000 + 0.25 * 2000 + 0.75 * 100, rel=0.03)
    assert halving_steps(5, (2000,), 4) == 10000  # no rung below the top: every trial in full


def test_cost_of_screening_counts_the_distillations_before_the_last():
    from search.space import format_cost

    spec = make_spec(space={"layers": [4, 6], "ffn": [2048], "hidden": [312, 456], "vocab": ["full"]},
                     distill={"steps": 1000, "batch_size": 8, "max_length": 128},
                     truncate={"distill": {"steps": 2000}}, search={"num_samples": 2, "screen": {"signal": "probe"}})
    lines = format_cost(spec, XLMR_BASE, size_table(spec, XLMR_BASE)).splitlines()
    # four candidates; before their truncations, the two depth distillations (1,000 steps each)
    assert lines[3] == ("  search.screen: 4 candidates built to rung 0 and scored by probe first; that trains only the "
                        "distillations before their last one: 2 builds, 2,000 steps; then the 2 trials run best first")
