"""Downstream evaluation: train an adapter (or the whole model) on a task and score the test split.

The paper's protocol: the encoder is frozen and a bottleneck adapter plus a task head train with the
task's learning rate, epochs and batch size (`pipeline.config.TaskTraining`); SA/TC test the last
epoch, NER/POS the epoch with the lowest dev loss. Everything repeats per seed; the result is the mean
and (population) standard deviation over seeds.

Token tasks label the first subword of each word and score words (``scoring="word"``); a word that
truncation or the tokenizer left without a subword counts as predicted with the most frequent train
tag. ``scoring="subword"`` is the reference scripts' variant: every subword carries its word's tag,
training and scoring run on subwords, and the score is seqeval's F1 on those sequences.

Command line::

    python -m pipeline evaluate --model DIR --task pos --data ../shared/data/mt/pos --seeds 1,2,3

The last stdout line is one JSON object (task, metric, mean, std, scores, sizes, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from pipeline.config import TASKS, EvalConfig, TaskSource, TaskTraining
from pipeline.data import TaskData, load_task
from pipeline.errors import UsageError
from pipeline.families import max_positions
from pipeline.metrics import example_stats, score, task_metric

__all__ = ["TrainedTask", "add_arguments", "combine_seeds", "evaluate_task", "main", "split_seeds", "train_task"]

log = logging.getLogger(__name__)
IGNORE = -100
_QUIET_SECONDS = 60.0  # within a long epoch, a progress line at least this often (a log has no progress bar)


def evaluate_task(
    model_dir: str,
    task: str,
    source: TaskSource,
    cfg: EvalConfig,
    *,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train and test ``task`` on the encoder of ``model_dir`` once per seed of ``cfg``.

    Args:
        model_dir: Hugging Face model directory (tokenizer included).
        task: ``sentiment``, ``topic``, ``ner`` or ``pos``.
        source: where the labelled data is.
        cfg: method, seeds, scoring and the per-task training settings.
        device: torch device; None picks CUDA when available, else CPU.
        progress: called with one-line progress messages.

    Returns:
        ``task, metric, mean, std, scores`` (one per seed, test split), ``dev_mean, dev_std,
        dev_scores`` (the same on dev: what a search selects on), ``seeds``,
        ``epochs`` (the epoch each seed tested), ``sizes`` (examples used per split), ``num_labels``,
        ``method``, ``scoring``, ``seconds``, ``cpu_seconds`` (this process's CPU time, training and
        scoring), the same per seed (``seed_seconds``, ``seed_cpu_seconds``: the first seed's include the
        data's loading and encoding, which every seed shares) and ``examples``: per split (``dev``, ``test``) one `pipeline.metrics.example_stats`
        per seed, what a paired bootstrap over examples needs.

    Raises:
        UsageError: bad data or a model directory that does not load.
    """
    mark, cpu = time.perf_counter(), time.process_time()
    if not cfg.seeds:
        raise UsageError("evaluation needs at least one seed")
    setup = _Setup.of(model_dir, task, source, cfg, device)
    common = {"task": task, "metric": task_metric(task, cfg.scoring),
              "sizes": {name: len(split) for name, split in setup.splits.items()},
              "num_labels": len(setup.data.labels), "method": setup.method, "scoring": cfg.scoring,
              "model": str(model_dir), "data": source.source}
    parts = []
    for seed in cfg.seeds:
        trained = setup.train(seed, progress)
        scores, examples = {}, {}
        for name in ("test", "dev"):
            gold, predicted = trained.outputs(name)
            scores[name] = score(task, gold, predicted, cfg.scoring)
            examples[name] = [example_stats(task, gold, predicted, cfg.scoring, setup.data.labels)]
        now, now_cpu = time.perf_counter(), time.process_time()
        parts.append({**common, "scores": [scores["test"]], "dev_scores": [scores["dev"]], "seeds": [seed],
                      "epochs": [trained.epoch], "seed_seconds": [round(now - mark, 2)],
                      "seed_cpu_seconds": [round(now_cpu - cpu, 2)],
                      "examples": {"dev": examples["dev"], "test": examples["test"]}})
        mark, cpu = now, now_cpu
        _report(progress, f"{task} seed {seed}: test {common['metric']} {scores['test']:.4f} (dev {scores['dev']:.4f})")
    return combine_seeds(parts)


_SHARED = ("task", "metric", "sizes", "num_labels", "method", "scoring")


def combine_seeds(parts: list[dict]) -> dict:
    """One `evaluate_task` result from results of the same task, data and settings on other seeds, in
    the order given: what evaluating all their seeds at once returns (each seed trains from its own
    seed alone), its times the sums of theirs. A cache can so keep each seed apart and reuse it in an
    evaluation of more seeds.

    Raises:
        ValueError: no parts, parts that differ in a setting, or a seed twice.
    """
    if not parts:
        raise ValueError("no evaluations to combine")
    first = parts[0]
    for part in parts[1:]:
        differ = [key for key in _SHARED if part.get(key) != first.get(key)]
        if differ:
            raise ValueError(f"evaluations that differ in {', '.join(differ)} cannot be combined")
    seeds = [seed for part in parts for seed in part["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat")

    def joined(key: str) -> list:
        return [value for part in parts for value in part[key]]

    scores, dev_scores = joined("scores"), joined("dev_scores")
    seed_seconds = [t for part in parts for t in _seed_times(part, "seconds")]
    seed_cpu = [t for part in parts for t in _seed_times(part, "cpu_seconds")]
    return {
        **{key: first[key] for key in _SHARED},
        "mean": statistics.fmean(scores),
        "std": statistics.pstdev(scores),
        "scores": scores,
        "dev_mean": statistics.fmean(dev_scores),
        "dev_std": statistics.pstdev(dev_scores),
        "dev_scores": dev_scores,
        "seeds": seeds,
        "epochs": joined("epochs"),
        "model": first["model"],
        "data": first["data"],
        "seconds": round(sum(seed_seconds), 2),
        "cpu_seconds": round(sum(seed_cpu), 2),
        "seed_seconds": seed_seconds,
        "seed_cpu_seconds": seed_cpu,
        "examples": {name: [stats for part in parts for stats in part["examples"][name]] for name in ("dev", "test")},
    }


def split_seeds(result: dict) -> list[dict]:
    """`result` (an `evaluate_task` result) as one result per seed, in its order: `combine_seeds` of
    them gives it back."""
    seconds, cpu = _seed_times(result, "seconds"), _seed_times(result, "cpu_seconds")
    return [combine_seeds([{**{key: result[key] for key in (*_SHARED, "model", "data")},
                            "scores": [result["scores"][i]], "dev_scores": [result["dev_scores"][i]],
                            "seeds": [seed], "epochs": [result["epochs"][i]], "seconds": seconds[i],
                            "cpu_seconds": cpu[i], "seed_seconds": [seconds[i]], "seed_cpu_seconds": [cpu[i]],
                            "examples": {name: [result["examples"][name][i]] for name in ("dev", "test")}}])
            for i, seed in enumerate(result["seeds"])]


def _seed_times(result: dict, key: str) -> list[float]:
    """Each seed's ``seconds`` or ``cpu_seconds``; a result cached before they were kept per seed splits
    its total evenly."""
    n = len(result["seeds"])
    return result.get(f"seed_{key}") or [round(result[key] / n, 2)] * n


def train_task(model_dir: str, task: str, source: TaskSource, cfg: EvalConfig, *, seed: int,
               device: str | None = None, progress: Callable[[str], None] | None = None) -> TrainedTask:
    """The task model of one seed of `evaluate_task`, trained exactly as there, with its splits ready to
    score by it or by another predictor of the same outputs (an exported encoder under its head).

    Raises:
        UsageError: bad data or a model directory that does not load.
    """
    return _Setup.of(model_dir, task, source, cfg, device).train(seed, progress)


@dataclasses.dataclass
class _Setup:
    """What every seed of one task's evaluation shares: the data, its encoded splits and the settings."""

    model_dir: str
    task: str
    data: TaskData
    training: TaskTraining
    method: str
    scoring: str
    splits: dict
    encoded: dict
    fallback: str
    pad_id: int
    device: str

    @classmethod
    def of(cls, model_dir: str, task: str, source: TaskSource, cfg: EvalConfig, device: str | None) -> _Setup:
        import torch

        from pipeline import modeling
        from pipeline.modeldir import check_model_dir

        if task not in TASKS:
            raise UsageError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
        training: TaskTraining = getattr(cfg, task)
        if Path(model_dir).expanduser().is_dir():  # a hub id (a teacher used as it is) is checked as it loads
            check_model_dir(model_dir)
        config = modeling.load_config(model_dir)
        data = load_task(task, source)
        tokenizer = modeling.load_tokenizer(model_dir, vocab_size=config["vocab_size"])
        max_length = min(training.max_length, max_positions(config))
        splits = {
            "train": data.train.head(training.max_train_examples),
            "dev": data.dev.head(training.max_eval_examples),
            "test": data.test.head(training.max_eval_examples),
        }
        label_ids = {label: i for i, label in enumerate(data.labels)}
        encoded = {name: _encode(tokenizer, data.kind, split, label_ids, max_length, cfg.scoring)
                   for name, split in splits.items()}
        return cls(model_dir, task, data, training, training.method or cfg.method, cfg.scoring, splits, encoded,
                   _most_frequent(data), tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                   device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def train(self, seed: int, progress: Callable[[str], None] | None) -> TrainedTask:
        model, epoch = _train(self.model_dir, self.data, self.encoded, self.training, self.method, seed, self.pad_id,
                              self.device, progress, self.task)
        return TrainedTask(model, epoch, self)


class TrainedTask:
    """A task model trained on one seed (`train_task`): ``model`` maps ``(ids, mask)`` to logits and has
    ``encoder`` and ``head``; ``epoch`` is the epoch it was taken from (1-based)."""

    def __init__(self, model, epoch: int, setup: _Setup) -> None:
        self.model, self.epoch, self._setup = model, epoch, setup

    def sizes(self) -> dict[str, int]:
        """Examples per split (``train``, ``dev``, ``test``)."""
        return {name: len(split) for name, split in self._setup.splits.items()}

    def outputs(self, split: str = "test", predictor=None) -> tuple[list, list]:
        """``(gold, predicted)`` of ``split`` by ``predictor`` (default: the trained model)."""
        s = self._setup
        return _split_outputs(predictor or self.model, s.encoded[split], s.splits[split], s.data, s.scoring,
                              s.fallback, s.pad_id, s.device)

    def score(self, split: str = "test", predictor=None) -> float:
        """The task's metric on ``split`` by ``predictor`` (default: the trained model)."""
        return score(self._setup.task, *self.outputs(split, predictor), self._setup.scoring)


def _report(progress: Callable[[str], None] | None, message: str) -> None:
    log.info("%s", message)
    if progress is not None:
        progress(message)


def _most_frequent(data: TaskData) -> str:
    if data.kind == "classification":
        return Counter(data.train.targets).most_common(1)[0][0]
    return Counter(tag for tags in data.train.targets for tag in tags).most_common(1)[0][0]


# ---------------------------------------------------------------- encoding


def _encode(tokenizer, kind: str, split, label_ids: dict[str, int], max_length: int, scoring: str) -> list[dict]:
    """One dict per example: ``input_ids``, ``labels`` (int or per-position list), ``word_ids``."""
    if kind == "classification":
        batch = tokenizer(list(split.inputs), truncation=True, max_length=max_length)
        return [
            {"input_ids": ids, "labels": label_ids[label]} for ids, label in zip(batch["input_ids"], split.targets)
        ]
    batch = tokenizer([list(t) for t in split.inputs], is_split_into_words=True, truncation=True,
                      max_length=max_length)
    rows = []
    for i, tags in enumerate(split.targets):
        word_ids = batch.word_ids(i)
        labels, previous = [], None
        for word in word_ids:
            if word is None or (word == previous and scoring == "word"):
                labels.append(IGNORE)
            else:
                labels.append(label_ids[tags[word]])
            previous = word
        rows.append({"input_ids": batch["input_ids"][i], "labels": labels, "word_ids": word_ids})
    return rows


def _batches(rows: list[dict], batch_size: int, pad_id: int, order: list[int]):
    """Padded tensors for ``rows`` taken in ``order``; yields (indices, input_ids, attention_mask, labels)."""
    import torch

    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        width = max(len(rows[i]["input_ids"]) for i in index)
        ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        token_level = isinstance(rows[index[0]]["labels"], list)
        labels = torch.full((len(index), width), IGNORE, dtype=torch.long) if token_level else torch.zeros(
            len(index), dtype=torch.long)
        for row, i in enumerate(index):
            n = len(rows[i]["input_ids"])
            ids[row, :n] = torch.tensor(rows[i]["input_ids"])
            mask[row, :n] = 1
            if token_level:
                labels[row, :n] = torch.tensor(rows[i]["labels"])
            else:
                labels[row] = rows[i]["labels"]
        yield index, ids, mask, labels


# ---------------------------------------------------------------- training


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _train(model_dir, data: TaskData, encoded, training: TaskTraining, method, seed, pad_id, device, progress, task):
    """Train one seed; returns the model with the selected epoch's weights, and that epoch (1-based)."""
    import torch

    from pipeline.adapters import build_task_model

    _seed_everything(seed)
    model = build_task_model(model_dir, len(data.labels), data.kind, method, training.reduction_factor,
                             training.pooling)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=training.lr, weight_decay=0.0)
    rows = encoded["train"]
    steps = training.epochs * math.ceil(len(rows) / training.batch_size)
    # Linear decay to zero, no warm-up: the defaults of the Trainer the reference scripts used.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / max(1, steps)))
    generator = random.Random(seed)
    best_loss, best_epoch, best_state = math.inf, training.epochs, None
    last_line = time.perf_counter()
    for epoch in range(1, training.epochs + 1):
        model.train()
        order = list(range(len(rows)))
        generator.shuffle(order)
        total, count = 0.0, 0
        batches = math.ceil(len(rows) / training.batch_size)
        for _, ids, mask, labels in _batches(rows, training.batch_size, pad_id, order):
            loss = _loss(model(ids.to(device), mask.to(device)), labels.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{task}: training loss became {loss.item()} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.item(), count + 1
            if time.perf_counter() - last_line > _QUIET_SECONDS:  # a long epoch says where it is
                _report(progress, f"{task} seed {seed} epoch {epoch}/{training.epochs}: batch {count}/{batches}, "
                                  f"train loss {total / count:.4f}")
                last_line = time.perf_counter()
        message = f"{task} seed {seed} epoch {epoch}/{training.epochs}: train loss {total / max(1, count):.4f}"
        if training.select == "best_dev":
            dev_loss = _eval_loss(model, encoded["dev"], pad_id, device)
            message += f", dev loss {dev_loss:.4f}"
            if dev_loss < best_loss:
                best_loss, best_epoch = dev_loss, epoch
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        _report(progress, message)
        last_line = time.perf_counter()
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return model, best_epoch


def _loss(logits, labels):
    import torch.nn.functional as F

    # logits: [batch, num_labels] or [batch, seq, num_labels]; labels: [batch] or [batch, seq]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def _eval_loss(model, rows, pad_id, device, batch_size: int = 64) -> float:
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for _, ids, mask, labels in _batches(rows, batch_size, pad_id, _by_length(rows)):
            logits = model(ids.to(device), mask.to(device))
            labels = labels.to(device)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                     ignore_index=IGNORE, reduction="sum").item()
            count += int((labels != IGNORE).sum())
    model.train()
    return total / max(1, count)


def _by_length(rows) -> list[int]:
    return sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))


def _predict(model, rows, pad_id, device, batch_size: int = 64) -> list:
    """Argmax label ids per example (classification) or per position (token tasks)."""
    import torch

    predictions: list = [None] * len(rows)
    with torch.no_grad():
        for index, ids, mask, _ in _batches(rows, batch_size, pad_id, _by_length(rows)):
            best = model(ids.to(device), mask.to(device)).argmax(-1).cpu().tolist()
            for row, i in enumerate(index):
                predictions[i] = best[row]
    return predictions


def _split_outputs(model, rows, split, data: TaskData, scoring, fallback, pad_id, device) -> tuple[list, list]:
    """``(gold, predicted)`` of a split as the task's metric takes them: labels, or tag sequences."""
    predicted = _predict(model, rows, pad_id, device)
    labels = data.labels
    if data.kind == "classification":
        return list(split.targets), [labels[p] for p in predicted]
    gold_seqs, pred_seqs = [], []
    for row, tags, pred in zip(rows, split.targets, predicted):
        if scoring == "subword":
            kept = [(g, p) for g, p in zip(row["labels"], pred) if g != IGNORE]
            gold_seqs.append([labels[g] for g, _ in kept])
            pred_seqs.append([labels[p] for _, p in kept])
            continue
        words = [fallback] * len(tags)
        for position, word in enumerate(row["word_ids"]):
            if word is not None and row["labels"][position] != IGNORE:
                words[word] = labels[pred[position]]
        gold_seqs.append(list(tags))
        pred_seqs.append(words)
    return gold_seqs, pred_seqs


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face model directory")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--data", required=True, help="hf:org/name[:config] or a folder with train/dev/test files")
    parser.add_argument("--format", default="auto", choices=("auto", "conllu", "conll", "csv", "tsv", "jsonl", "hf"))
    parser.add_argument("--method", choices=("adapter", "finetune"), default="adapter")
    parser.add_argument("--epochs", type=int, help="override the task's epochs")
    parser.add_argument("--lr", type=float, help="override the task's learning rate")
    parser.add_argument("--batch-size", type=int, help="override the task's batch size")
    parser.add_argument("--max-length", type=int, help="override the task's maximum length in subwords")
    parser.add_argument("--reduction-factor", type=int, help="override the adapter's reduction factor")
    parser.add_argument("--pooling", choices=("first", "mean"),
                        help="classification: the first token's vector (default, the paper's) or the mean of the tokens")
    parser.add_argument("--max-train-examples", type=int, help="use only the first N train examples")
    parser.add_argument("--max-eval-examples", type=int, help="use only the first N dev and test examples")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    parser.add_argument("--scoring", choices=("word", "subword"), default="word")
    parser.add_argument("--text-column", help="classification: text column (name or 0-based index)")
    parser.add_argument("--label-column", help="classification: label column (name or 0-based index)")
    parser.add_argument("--token-column", help="token tasks: token column (0-based index, or a JSON/hub field)")
    parser.add_argument("--tag-column", help="token tasks: tag column (0-based index, or a JSON/hub field)")
    header = parser.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_true", default=None, help="CSV/TSV has a header")
    header.add_argument("--no-header", dest="header", action="store_false", help="CSV/TSV has no header row")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--out", help="also write DIR/metrics.json")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers like 1,2,3") from None
    if not seeds:
        raise UsageError("--seeds: give at least one seed")
    return seeds


def config_from_args(args: argparse.Namespace) -> tuple[TaskSource, EvalConfig]:
    """The task source and evaluation config the command-line options describe."""
    source = TaskSource(
        source=args.data, format=args.format, text_column=args.text_column, label_column=args.label_column,
        token_column=args.token_column, tag_column=args.tag_column, header=args.header,
    )
    overrides = {
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length,
        "reduction_factor": args.reduction_factor, "max_train_examples": args.max_train_examples,
        "max_eval_examples": args.max_eval_examples, "pooling": args.pooling,
    }
    for name in ("epochs", "batch_size", "max_length", "reduction_factor"):
        if overrides[name] is not None and overrides[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {overrides[name]}")
    base = EvalConfig(method=args.method, seeds=_seeds(args.seeds), scoring=args.scoring)
    training = dataclasses.replace(getattr(base, args.task), **{k: v for k, v in overrides.items() if v is not None})
    return source, dataclasses.replace(base, **{args.task: training})


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(args: argparse.Namespace) -> int:
    if not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: not a model directory")
    source, cfg = config_from_args(args)
    result = evaluate_task(args.model, args.task, source, cfg, device=args.device)
    if args.out:
        write_json_atomic(Path(args.out) / "metrics.json", result)
    print(json.dumps(result), flush=True)
    return 0
