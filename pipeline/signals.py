"""Cheap signals: what a student is likely worth, measured before it is fully trained and evaluated.

A search ranks students with one of these where a full evaluation (adapters trained per task and
seed) would cost too much: after the training-free stages, or part-way through the last distillation.

- ``mlm``: the student's masked-LM loss on held-out text (lower is better);
- ``distill``: its distillation loss against a teacher on held-out text, ``alpha * MLM + (1 - alpha) *
  KD`` of the distillation settings (lower is better); the teacher must share the student's vocabulary
  (trim it alike first);
- ``probe``: linear probes on frozen features, per task: logistic regression on the mean of a text's
  last hidden states (classification) or on each word's first subword (token tasks), trained on the
  task's training split and scored on dev with the task's metric; the value is the mean over tasks
  (higher is better);
- ``capped``: the downstream evaluation with a cheaper `EvalConfig` (a search's rung evaluation: fewer
  epochs, fewer examples); the value is the mean dev score over tasks (higher is better).

Every held-out loss is taken on the same rows, masked with a fixed seed (`SignalConfig`), so values
compare across students of one vocabulary. `measure` runs one signal on a model directory and reports
its value, its parts and its cost in CPU and wall seconds.

Command line::

    python -m pipeline signal --model DIR --signal probe --task pos=../shared/data/mt/pos
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Mapping

import torch

from pipeline import modeling
from pipeline.config import DistillConfig, EvalConfig, SignalConfig, TaskSource
from pipeline.errors import UsageError

__all__ = ["SIGNALS", "heldout_distill_loss", "heldout_mlm_loss", "measure", "probe_scores"]

log = logging.getLogger(__name__)

# each signal and whether a smaller or a larger value is better
SIGNALS: dict[str, str] = {"mlm": "min", "distill": "min", "probe": "max", "capped": "max"}


def _heldout_batches(tokenizer, texts: list[str], config, cfg: SignalConfig):
    from pipeline.families import max_positions
    from pipeline.mlm import encode, mlm_batches

    chosen = texts[: cfg.heldout_lines] if cfg.heldout_lines is not None else texts
    rows = encode(tokenizer, chosen, min(cfg.max_length, max_positions(config)), pack=cfg.pack)
    vocab_size = config.vocab_size
    if not rows:
        raise UsageError("held-out signals need text: the held-out lines are empty after tokenisation")
    generator = torch.Generator().manual_seed(cfg.seed)
    return mlm_batches(tokenizer, rows, cfg.batch_size, cfg.mlm_probability, generator, vocab_size=vocab_size,
                       shuffle=False)


def heldout_mlm_loss(model, tokenizer, texts: list[str], cfg: SignalConfig = SignalConfig(), *,
                     device: str | None = None) -> float:
    """Masked-LM cross-entropy of ``model`` on ``texts`` (the mean over masked positions)."""
    from pipeline.losses import mlm_loss

    model.eval().to(device or "cpu")
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in _heldout_batches(tokenizer, texts, model.config, cfg):
            batch = {key: value.to(model.device) for key, value in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            n = int((batch["labels"] != -100).sum())
            total += float(mlm_loss(logits, batch["labels"])) * n
            count += n
    return total / max(1, count)


def heldout_distill_loss(student, teacher, tokenizer, texts: list[str], distill: DistillConfig,
                         cfg: SignalConfig = SignalConfig(), *, device: str | None = None) -> dict[str, float]:
    """The distillation loss of ``distill`` between ``student`` and ``teacher`` on ``texts``.

    Returns:
        ``{"loss", "mlm", "kd"}``, each the mean over the held-out batches.

    Raises:
        UsageError: when the two vocabularies differ.
    """
    from pipeline.losses import distill_loss

    if student.config.vocab_size != teacher.config.vocab_size:
        raise UsageError(f"student vocabulary {student.config.vocab_size} differs from the teacher's "
                         f"{teacher.config.vocab_size}: trim the teacher the same way first")
    student.eval().to(device or "cpu")
    teacher.eval().to(student.device)
    parts: dict[str, list[float]] = {"loss": [], "mlm": [], "kd": []}
    with torch.no_grad():
        for batch in _heldout_batches(tokenizer, texts, student.config, cfg):
            batch = {key: value.to(student.device) for key, value in batch.items()}
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            loss, terms = distill_loss(student(**inputs).logits, teacher(**inputs).logits, batch["labels"],
                                       batch["attention_mask"], distill)
            parts["loss"].append(float(loss))
            parts["mlm"].append(terms["mlm"])
            parts["kd"].append(terms["kd"])
    return {name: statistics.fmean(values) for name, values in parts.items()}


def probe_scores(model, tokenizer, tasks: Mapping[str, TaskSource], cfg: SignalConfig = SignalConfig(), *,
                 device: str | None = None) -> dict[str, float]:
    """Dev score of a linear probe per task, on frozen features of ``model`` (a ``...ForMaskedLM``)."""
    from pipeline.data import load_task

    encoder = modeling.base_model(model).eval().to(device or "cpu")
    scores = {}
    for task, source in tasks.items():
        data = load_task(task, source)
        train = data.train.head(cfg.probe_max_train)
        scores[task] = _probe(encoder, tokenizer, task, data, train, cfg)
    return scores


def _probe(encoder, tokenizer, task: str, data, train, cfg: SignalConfig) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from pipeline.metrics import score

    features_train, targets_train, _ = _features(encoder, tokenizer, data.kind, train, cfg)
    features_dev, _, present = _features(encoder, tokenizer, data.kind, data.dev, cfg)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.probe_c, max_iter=500))
    with threadpool_limits(1):  # one BLAS thread: a table runs probes side by side, one core a worker
        classifier.fit(features_train, targets_train)
        predicted = list(classifier.predict(features_dev)) if len(features_dev) else []
    if data.kind == "classification":
        return score(task, list(data.dev.targets), predicted)
    fallback = Counter(tag for tags in train.targets for tag in tags).most_common(1)[0][0]
    found = iter(predicted)
    gold, guesses = [], []
    for tags, words in zip(data.dev.targets, present):  # words truncation left without a subword: fallback
        gold.append(list(tags))
        guesses.append([next(found) if word else fallback for word in words])
    return score(task, gold, guesses)


def _features(encoder, tokenizer, kind: str, split, cfg: SignalConfig):
    """``(features [n, hidden], targets, present)``: one row per text (classification) or per word that
    kept a subword (token tasks; ``present`` says, per sentence, which words did)."""
    import numpy as np

    from pipeline.families import max_positions

    length = min(cfg.probe_max_length, max_positions(encoder.config))
    token_task = kind != "classification"
    rows, targets, present = [], [], []
    for start in range(0, len(split.inputs), cfg.batch_size):
        inputs = list(split.inputs[start : start + cfg.batch_size])
        labels = list(split.targets[start : start + cfg.batch_size])
        encoded = tokenizer([list(x) for x in inputs] if token_task else inputs, is_split_into_words=token_task,
                            truncation=True, max_length=length, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(input_ids=encoded["input_ids"].to(encoder.device),
                             attention_mask=encoded["attention_mask"].to(encoder.device)).last_hidden_state.cpu()
        if not token_task:
            mask = encoded["attention_mask"][..., None].float()
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
            targets += labels
            continue
        for i, tags in enumerate(labels):
            first: dict[int, int] = {}
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and word not in first:
                    first[word] = position
            kept = [w for w in range(len(tags)) if w in first]
            if kept:
                rows.append(hidden[i, [first[w] for w in kept]].numpy())
            targets += [tags[w] for w in kept]
            present.append([w in first for w in range(len(tags))])
    width = encoder.config.hidden_size
    return (np.concatenate(rows) if rows else np.zeros((0, width), dtype=np.float32)), targets, present


def measure(signal: str, model_dir: str, *, heldout: list[str] | None = None, teacher_dir: str | None = None,
            distill: DistillConfig | None = None, tasks: Mapping[str, TaskSource] | None = None,
            evaluation: EvalConfig | None = None, cfg: SignalConfig = SignalConfig(),
            device: str | None = None) -> dict:
    """One signal of the model in ``model_dir``, with its cost.

    Args:
        signal: one of `SIGNALS`.
        model_dir: the student (a Hugging Face directory with its tokenizer).
        heldout: held-out text (``mlm`` and ``distill``).
        teacher_dir: the teacher, of the student's vocabulary (``distill``).
        distill: the distillation settings whose loss is measured (``distill``; default `DistillConfig`).
        tasks: the labelled tasks (``probe`` and ``capped``).
        evaluation: the capped evaluation (``capped``).
        cfg: how held-out losses and probes are taken.
        device: where it runs (default: the CPU).

    Returns:
        ``{"signal", "value", "better" ("min" or "max"), "parts", "cpu_s", "wall_s"}``.

    Raises:
        UsageError: for an unknown signal or one whose inputs are missing.
    """
    if signal not in SIGNALS:
        raise UsageError(f"unknown signal {signal!r}: choose one of {', '.join(SIGNALS)}")
    needs = {"mlm": ("heldout",), "distill": ("heldout", "teacher_dir"), "probe": ("tasks",),
             "capped": ("tasks", "evaluation")}[signal]
    given = {"heldout": heldout, "teacher_dir": teacher_dir, "tasks": tasks, "evaluation": evaluation}
    missing = [name for name in needs if not given[name]]
    if missing:
        raise UsageError(f"signal {signal} needs {', '.join(missing)}")
    started, cpu = time.perf_counter(), time.process_time()
    if signal == "capped":
        from pipeline.evaluate import evaluate_task

        parts = {task: evaluate_task(model_dir, task, source, evaluation, device=device)["dev_mean"]
                 for task, source in tasks.items()}
        value = statistics.fmean(parts.values())
    else:
        model, tokenizer = modeling.load(model_dir)
        if signal == "mlm":
            value = heldout_mlm_loss(model, tokenizer, heldout, cfg, device=device)
            parts = {}
        elif signal == "distill":
            teacher, _ = modeling.load(teacher_dir)
            parts = heldout_distill_loss(model, teacher, tokenizer, heldout, distill or DistillConfig(), cfg,
                                         device=device)
            value = parts.pop("loss")
        else:
            parts = probe_scores(model, tokenizer, tasks, cfg, device=device)
            value = statistics.fmean(parts.values())
    return {"signal": signal, "value": float(value), "better": SIGNALS[signal], "parts": parts,
            "cpu_s": round(time.process_time() - cpu, 3), "wall_s": round(time.perf_counter() - started, 3)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the student's Hugging Face directory")
    parser.add_argument("--signal", required=True, choices=sorted(SIGNALS))
    parser.add_argument("--heldout", help="held-out text (mlm, distill): a file, a folder or hf:org/name")
    parser.add_argument("--teacher", help="the teacher's directory, of the student's vocabulary (distill)")
    parser.add_argument("--task", action="append", default=[], metavar="TASK=DATA",
                        help="a labelled task and its data folder (probe, capped); repeat for more")
    parser.add_argument("--capped-epochs", type=int, default=2, help="capped: epochs of each task (default 2)")
    parser.add_argument("--capped-max-train", type=int, default=300,
                        help="capped: the first N training examples of each task (default 300)")
    parser.add_argument("--device", default=None)


def main(args: argparse.Namespace) -> int:
    from pipeline.config import TASKS
    from pipeline.corpus import read_corpus

    tasks = {}
    for item in args.task:
        task, _, data = item.partition("=")
        if task not in TASKS or not data:
            raise UsageError(f"--task {item!r}: expected TASK=DATA with TASK one of {', '.join(TASKS)}")
        tasks[task] = TaskSource(source=data)
    evaluation = None
    if args.signal == "capped":
        base = EvalConfig(seeds=(1,))
        evaluation = dataclasses.replace(base, **{
            task: dataclasses.replace(getattr(base, task), epochs=args.capped_epochs,
                                      max_train_examples=args.capped_max_train) for task in TASKS})
    heldout = read_corpus(args.heldout) if args.heldout else None
    result = measure(args.signal, args.model, heldout=heldout, teacher_dir=args.teacher, tasks=tasks or None,
                     evaluation=evaluation, device=args.device)
    print(json.dumps(result), flush=True)
    return 0
