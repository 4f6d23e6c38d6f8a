"""Task metrics, computed with scikit-learn and seqeval rather than by hand.

- sentiment, topic: macro-F1 over the classes present in gold or predictions (`sklearn.metrics.f1_score`).
- ner: entity-level F1 of seqeval (default, non-strict mode: the conlleval convention).
- pos: UPOS accuracy over words (`sklearn.metrics.accuracy_score` on the flattened tags).
- subword scoring (the reference scripts): every subword carries its word's tag and seqeval's F1 runs on
  those sequences; for POS that is seqeval over raw UPOS tags, a chunk F1, not an accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

__all__ = ["chunk_f1", "entity_f1", "macro_f1", "score", "task_metric", "token_accuracy"]


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


def _same_length(gold: Sequence, predicted: Sequence) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")


def _same_shape(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
    _same_length(gold, predicted)
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sequence {i}: {len(g)} gold tags but {len(p)} predicted")
