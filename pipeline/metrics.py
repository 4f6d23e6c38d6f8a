"""Task metrics, computed with scikit-learn and seqeval rather than by hand.

- sentiment, topic: macro-F1 over the classes present in gold or predictions (`sklearn.metrics.f1_score`).
- ner: entity-level F1 of seqeval (default, non-strict mode: the conlleval convention).
- pos: UPOS accuracy over words (`sklearn.metrics.accuracy_score` on the flattened tags).
- subword scoring (the reference scripts): every subword carries its word's tag and seqeval's F1 runs on
  those sequences; for POS that is seqeval over raw UPOS tags, a chunk F1, not an accuracy.

Resampling (a paired bootstrap over test examples): `example_stats` keeps, per example, what the
metric needs (a sentence's correct and total words, its true and false entity counts, or a text's gold
and predicted class), and `resampled_scores` computes the metric again on many resamples at once,
equal to the functions above on the same examples (tests check it).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

__all__ = [
    "chunk_f1", "entity_f1", "example_stats", "macro_f1", "resampled_scores", "score", "task_metric", "token_accuracy",
]


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in ``gold`` or ``predicted``."""
    from sklearn.metrics import f1_score

    _same_length(gold, predicted)
    return float(f1_score(list(gold), list(predicted), average="macro", zero_division=0))


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """seqeval's micro-averaged entity F1 over B-/I- tagged sequences."""
    from seqeval.metrics import f1_score

    _same_shape(gold, predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on tags without a B-/I- prefix (the POS chunk mode)
        return float(f1_score([list(s) for s in gold], [list(s) for s in predicted], zero_division=0))


def chunk_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """The reference's subword score: seqeval F1 on whatever tags the sequences carry (UPOS included)."""
    return entity_f1(gold, predicted)


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Share of tokens whose predicted tag equals the gold tag."""
    from sklearn.metrics import accuracy_score

    _same_shape(gold, predicted)
    flat_gold = [tag for seq in gold for tag in seq]
    flat_pred = [tag for seq in predicted for tag in seq]
    return float(accuracy_score(flat_gold, flat_pred))


def task_metric(task: str, scoring: str = "word") -> str:
    """Name of the metric reported for ``task`` under ``scoring`` (``word`` or ``subword``)."""
    if task in ("sentiment", "topic"):
        return "macro_f1"
    if task == "ner":
        return "entity_f1"
    if task == "pos":
        return "chunk_f1" if scoring == "subword" else "accuracy"
    raise ValueError(f"unknown task {task!r}")


def score(task: str, gold, predicted, scoring: str = "word") -> float:
    """The task's metric (see `task_metric`) of ``predicted`` against ``gold``."""
    name = task_metric(task, scoring)
    return {"macro_f1": macro_f1, "entity_f1": entity_f1, "chunk_f1": chunk_f1, "accuracy": token_accuracy}[name](
        gold, predicted
    )


def example_stats(task: str, gold, predicted, scoring: str = "word", labels: Sequence[str] = ()) -> dict:
    """Per-example counts from which the task's metric can be computed on any subset or resample.

    Args:
        task, scoring: as for `score`.
        gold, predicted: as for `score` (labels, or one tag sequence per sentence).
        labels: classification only: the label names, in the order their indices are stored.

    Returns:
        ``{"metric": name, ...}`` with lists of ints, one per example: ``gold`` and ``pred`` (label
        indices) for ``macro_f1``; ``correct`` and ``total`` (words) for ``accuracy``; ``tp``, ``fp``
        and ``fn`` (entities) for ``entity_f1`` and ``chunk_f1``.
    """
    metric = task_metric(task, scoring)
    if metric == "macro_f1":
        _same_length(gold, predicted)
        index = {label: i for i, label in enumerate(labels)}
        return {"metric": metric, "gold": [index[g] for g in gold], "pred": [index[p] for p in predicted]}
    _same_shape(gold, predicted)
    if metric == "accuracy":
        return {"metric": metric, "correct": [sum(g == p for g, p in zip(gs, ps)) for gs, ps in zip(gold, predicted)],
                "total": [len(gs) for gs in gold]}
    from seqeval.metrics.sequence_labeling import get_entities

    tp, fp, fn = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for gs, ps in zip(gold, predicted):
            true, found = set(get_entities(list(gs))), set(get_entities(list(ps)))
            tp.append(len(true & found))
            fp.append(len(found - true))
            fn.append(len(true - found))
    return {"metric": metric, "tp": tp, "fp": fp, "fn": fn}


def resampled_scores(stats: Mapping, indices):
    """The metric of `example_stats` on each row of ``indices`` (``[resamples, n]`` example indices,
    repeats allowed), as a float array ``[resamples]``; a 1-D ``indices`` gives one float array of one."""
    import numpy as np

    rows = np.atleast_2d(np.asarray(indices))
    metric = stats["metric"]
    if metric == "accuracy":
        correct, total = np.asarray(stats["correct"])[rows].sum(1), np.asarray(stats["total"])[rows].sum(1)
        return np.where(total > 0, correct / np.maximum(total, 1), 0.0)
    if metric in ("entity_f1", "chunk_f1"):
        tp, fp, fn = (np.asarray(stats[k])[rows].sum(1) for k in ("tp", "fp", "fn"))
        denominator = 2 * tp + fp + fn
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    if metric != "macro_f1":
        raise ValueError(f"unknown metric {metric!r}")
    gold, pred = np.asarray(stats["gold"])[rows], np.asarray(stats["pred"])[rows]
    classes = int(max(gold.max(initial=0), pred.max(initial=0))) + 1
    total, present = np.zeros(len(rows)), np.zeros(len(rows))
    for c in range(classes):  # F1 of class c = 2 tp / (gold count + predicted count), over the classes present
        is_gold, is_pred = gold == c, pred == c
        both = is_gold.sum(1) + is_pred.sum(1)
        total += np.where(both > 0, 2 * (is_gold & is_pred).sum(1) / np.maximum(both, 1), 0.0)
        present += both > 0
    return np.where(present > 0, total / np.maximum(present, 1), 0.0)


def _same_length(gold: Sequence, predicted: Sequence) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")


def _same_shape(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
    _same_length(gold, predicted)
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sequence {i}: {len(g)} gold tags but {len(p)} predicted")
