"""Metric functions against values worked out by hand."""

from __future__ import annotations

import pytest

from pipeline.metrics import chunk_f1, entity_f1, macro_f1, score, task_metric, token_accuracy


def test_macro_f1_by_hand():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    # a: P 1/2 R 1/2 F 1/2; b: P 2/3 R 1 F 4/5; c: P 0 R 0 F 0 -> mean 13/30
    assert macro_f1(gold, pred) == pytest.approx(13 / 30)
    assert macro_f1(["0", "1"], ["0", "1"]) == 1.0


def test_entity_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # gold entities 3, predicted 3, correct 2 (PER, ORG) -> P = R = F = 2/3
    assert entity_f1(gold, pred) == pytest.approx(2 / 3)
    # a wrong boundary is a miss: gold PER spans two tokens, prediction one
    assert entity_f1([["B-PER", "I-PER"]], [["B-PER", "O"]]) == 0.0


def test_token_accuracy_by_hand():
    assert token_accuracy([["DET", "NOUN"], ["VERB"]], [["DET", "VERB"], ["VERB"]]) == pytest.approx(2 / 3)


def test_chunk_f1_is_seqeval_on_raw_tags():
    # seqeval reads "NOUN" as a chunk of type "OUN" starting with "N": adjacent identical tags merge.
    gold = [["NOUN", "NOUN", "VERB"]]
    assert chunk_f1(gold, gold) == 1.0
    # gold chunks (OUN 0-1), (ERB 2); predicted (OUN 0), (ERB 1-2): no exact match
    assert chunk_f1(gold, [["NOUN", "VERB", "VERB"]]) == 0.0
    # four one-token chunks each side, three equal -> 3/4
    assert chunk_f1([["DET", "NOUN", "ADP", "NOUN"]], [["DET", "NOUN", "ADP", "VERB"]]) == pytest.approx(0.75)


def test_task_metric_names_and_dispatch():
    assert task_metric("sentiment") == task_metric("topic") == "macro_f1"
    assert task_metric("ner") == "entity_f1"
    assert task_metric("pos") == "accuracy" and task_metric("pos", "subword") == "chunk_f1"
    assert score("pos", [["A", "B"]], [["A", "A"]]) == 0.5
    with pytest.raises(ValueError, match="sequence 0"):
        token_accuracy([["A"]], [["A", "B"]])
