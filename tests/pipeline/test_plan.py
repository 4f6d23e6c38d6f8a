"""The torch-free planner: which stages run, their cache keys, shared prefixes, trimmed teacher copies."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pipeline.config import STAGES, Candidate, CorpusSource, DistillConfig, TruncateConfig
from pipeline.errors import UsageError
from pipeline.plan import TrialPlan, plan_steps, size_problems

TEACHER = {"model_type": "xlm-roberta", "num_hidden_layers": 4, "intermediate_size": 37, "hidden_size": 32,
           "vocab_size": 300, "num_attention_heads": 4, "max_position_embeddings": 66, "type_vocab_size": 1}


def plan(candidate, order=STAGES, **changes) -> TrialPlan:
    base = TrialPlan(teacher="t", candidate=candidate, order=order, corpus=CorpusSource("c.txt"),
                     heldout=CorpusSource("h.txt"))
    return dataclasses.replace(base, **changes)


def stages(steps):
    return [("teacher " if s.for_teacher else "") + s.stage for s in steps]


def test_paper_order_chains_keys_and_sizes():
    steps = plan_steps(plan(Candidate(2, 20, 16, 150)), "hub:t", TEACHER)
    assert stages(steps) == ["distill", "prune", "truncate", "trim_vocab"]
    assert steps[0].source == "hub:t" and steps[0].teacher == "hub:t"
    assert [s.source for s in steps[1:]] == [s.key for s in steps[:-1]]
    assert steps[2].teacher == steps[1].key  # the second distillation learns from the pruned model
    assert dict(steps[-1].sizes) == {"num_hidden_layers": 2, "intermediate_size": 20, "hidden_size": 16, "vocab_size": 150}
    assert len({s.key for s in steps}) == 4


def test_identity_stages_are_left_out_and_siblings_share_prefixes():
    assert plan_steps(plan(Candidate(4, 37, 32, None)), "hub:t", TEACHER) == []
    assert stages(plan_steps(plan(Candidate(4, 37, 32, 300)), "hub:t", TEACHER)) == []  # full size: no trim
    a = plan_steps(plan(Candidate(2, 20, 16, None)), "hub:t", TEACHER)
    b = plan_steps(plan(Candidate(2, 20, 8, None)), "hub:t", TEACHER)
    assert [s.key for s in a[:2]] == [s.key for s in b[:2]] and a[2].key != b[2].key
    # a setting of a later stage leaves the earlier keys alone
    c = plan_steps(plan(Candidate(2, 20, 16, None), truncate=TruncateConfig(distill=DistillConfig(steps=7))), "hub:t", TEACHER)
    assert [s.key for s in c[:2]] == [s.key for s in a[:2]] and c[2].key != a[2].key
    d = plan_steps(plan(Candidate(2, 20, 16, None), distill=DistillConfig(steps=7)), "hub:t", TEACHER)
    assert not {s.key for s in d} & {s.key for s in a}


def test_trim_first_trims_the_teacher_once_with_the_student():
    steps = plan_steps(plan(Candidate(2, 37, 32, 120), order=("trim_vocab", "distill", "prune", "truncate")), "hub:t", TEACHER)
    assert stages(steps) == ["trim_vocab", "distill"]
    assert steps[1].source == steps[1].teacher == steps[0].key


def test_a_trimmed_teacher_copy_only_when_a_later_distillation_reads_it():
    order = ("prune", "trim_vocab", "truncate", "distill")
    original = plan(Candidate(2, 20, 16, 150), order=order, truncate=TruncateConfig(teacher="original"))
    steps = plan_steps(original, "hub:t", TEACHER)
    assert stages(steps) == ["prune", "trim_vocab", "teacher trim_vocab", "truncate", "distill"]
    copy = steps[2]
    assert copy.source == "hub:t" and steps[3].teacher == copy.key and steps[4].teacher == copy.key
    assert stages(plan_steps(plan(Candidate(4, 20, 16, 150), order=order), "hub:t", TEACHER)) == \
        ["prune", "trim_vocab", "truncate"]  # pruned teacher, no depth change: no copy needed


def test_impossible_candidates_and_orders():
    with pytest.raises(UsageError, match="candidate num_hidden_layers: 6 is larger than the teacher's num_hidden_layers=4"):
        plan_steps(plan(Candidate(6, 37, 32)), "hub:t", TEACHER)
    with pytest.raises(UsageError, match="candidate hidden_size: 18 is not divisible by num_attention_heads=4"):
        plan_steps(plan(Candidate(2, 37, 18)), "hub:t", TEACHER)
    with pytest.raises(UsageError, match="permutation"):
        plan_steps(plan(Candidate(2, 37, 32), order=("distill",)), "hub:t", TEACHER)
    assert size_problems(TEACHER, intermediate_size=0, vocab_size=None) == [("intermediate_size", "0 must be at least 1")]


def test_the_planner_imports_no_torch():
    code = "import sys, pipeline.plan; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_rungs_touch_only_the_last_distillation_and_what_follows():
    from pipeline.plan import rung_steps

    assert rung_steps(100, 1000, 3) == (100, 300, 1000) and rung_steps(50, 50, 2) == (50,)
    # no rung within one reduction factor of the top: 300 x 3 = 900 <= 1,000 stays, 900 x 3 > 1,000 goes
    assert rung_steps(100, 900, 3) == (100, 300, 900) and rung_steps(22, 200, 3) == (22, 66, 200)
    assert rung_steps(80, 200, 3) == (200,)
    full = plan_steps(plan(Candidate(2, 20, 16, 150)), "hub:t", TEACHER)
    at = {r: plan_steps(plan(Candidate(2, 20, 16, 150), rung=r, rungs=(3, 9)), "hub:t", TEACHER) for r in (3, 9)}
    assert [s.key for s in at[3][:2]] == [s.key for s in full[:2]]  # the shared depth distillation: full steps
    assert at[3][2].rung == 3 and at[9][2].rung == 9 and at[3][2].key != at[9][2].key != full[2].key
    assert at[9][2].resume == (at[3][2].key,) and at[3][2].resume == ()
    assert at[3][3].source == at[3][2].key and at[3][3].key != at[9][3].key  # the trim follows its rung
    # without a truncation the depth distillation is the last one
    depth = plan_steps(plan(Candidate(2, 37, 32), rung=3, rungs=(3, 9)), "hub:t", TEACHER)
    assert [(s.stage, s.rung) for s in depth] == [("distill", 3)]
    with pytest.raises(UsageError, match=r"rung 4 is not one of the search's rungs \[3, 9\]"):
        plan_steps(plan(Candidate(2, 20, 16), rung=4, rungs=(3, 9)), "hub:t", TEACHER)
