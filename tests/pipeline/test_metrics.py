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


def _random_labels(rng, n, labels):
    return [labels[i] for i in rng.integers(0, len(labels), n)]


def test_resampled_scores_equal_the_metrics_on_the_same_examples():
    import numpy as np

    from pipeline.metrics import example_stats, resampled_scores

    rng = np.random.default_rng(0)
    labels = ["neg", "pos", "mixed"]
    gold, pred = _random_labels(rng, 60, labels), _random_labels(rng, 60, labels)
    tags = ["B-PER", "I-PER", "B-LOC", "O", "O"]
    gold_seqs = [_random_labels(rng, int(rng.integers(1, 9)), tags) for _ in range(40)]
    pred_seqs = [_random_labels(rng, len(g), tags) for g in gold_seqs]
    upos = ["NOUN", "VERB", "DET"]
    gold_pos = [_random_labels(rng, int(rng.integers(1, 9)), upos) for _ in range(40)]
    pred_pos = [_random_labels(rng, len(g), upos) for g in gold_pos]
    cases = [("topic", gold, pred, "word"), ("ner", gold_seqs, pred_seqs, "word"),
             ("pos", gold_pos, pred_pos, "word"), ("pos", gold_pos, pred_pos, "subword")]
    for task, g, p, scoring in cases:
        stats = example_stats(task, g, p, scoring, labels)
        assert resampled_scores(stats, np.arange(len(g)))[0] == pytest.approx(score(task, g, p, scoring))
        for draw in rng.integers(0, len(g), size=(5, len(g))):  # a resample, repeats included
            expected = score(task, [g[i] for i in draw], [p[i] for i in draw], scoring)
            assert resampled_scores(stats, draw)[0] == pytest.approx(expected), (task, scoring)
    batch = rng.integers(0, 60, size=(7, 60))
    stats = example_stats("topic", gold, pred, "word", labels)
    assert resampled_scores(stats, batch).shape == (7,)


def test_example_stats_by_hand():
    from pipeline.metrics import example_stats

    assert example_stats("pos", [["A", "B"], ["C"]], [["A", "A"], ["C"]]) == {
        "metric": "accuracy", "correct": [1, 1], "total": [2, 1]}
    assert example_stats("ner", [["B-PER", "I-PER", "O"]], [["B-PER", "O", "B-LOC"]]) == {
        "metric": "entity_f1", "tp": [0], "fp": [2], "fn": [1]}
    assert example_stats("sentiment", ["1", "0"], ["1", "1"], labels=["0", "1"]) == {
        "metric": "macro_f1", "gold": [1, 0], "pred": [1, 1]}
