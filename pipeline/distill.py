"""Stages 1 and 3b: distil a teacher into a student with fewer layers (or into a given student).

The student is the teacher's config with fewer layers; its layers are copied from the teacher layers
an init strategy names, everything outside the layer stack is copied. The loss is
``alpha * MLM + (1 - alpha) * KD`` on one masked batch that teacher and student both see; AdamW with
linear decay; the checkpoint with the lowest held-out loss is returned. `train_loop` is also the loop
of `pipeline.adapt` (plain MLM).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from pipeline import modeling
from pipeline.config import DistillConfig
from pipeline.corpus import read_corpus, split_heldout
from pipeline.errors import UsageError
from pipeline.losses import distill_loss
from pipeline.families import max_positions
from pipeline.mlm import encode, mlm_batches

__all__ = ["layer_indices", "init_student", "distill", "distill_step", "train_loop", "add_arguments", "main"]

log = logging.getLogger(__name__)

INITS = ("stride", "last_k", "first_k", "first_last_k", "random")

# (model, batch) -> (loss, parts); the batch holds input_ids, attention_mask, labels on the device
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def layer_indices(num_teacher_layers: int, num_hidden_layers: int, init: str) -> list[int] | None:
    """The teacher layers a strategy copies into the student, in order (``None`` for ``random``).

    Raises:
        UsageError: for an unknown strategy or a layer count outside ``1..num_teacher_layers``.
    """
    n, k = num_teacher_layers, num_hidden_layers
    if not 1 <= k <= n:
        raise UsageError(f"student layers {k} must be between 1 and the teacher's {n}")
    if init == "stride":
        return [i * n // k for i in range(k)]
    if init == "last_k":
        return list(range(n - k, n))
    if init == "first_k":
        return list(range(k))
    if init == "first_last_k":
        first = (k + 1) // 2
        return list(range(first)) + list(range(n - (k - first), n))
    if init == "random":
        return None
    raise UsageError(f"init strategy {init!r} is not one of {', '.join(INITS)}")


def init_student(teacher, num_hidden_layers: int, init: str, *, seed: int = 0):
    """A student with ``num_hidden_layers`` layers copied from ``teacher`` by strategy ``init``.

    Everything outside the layer stack (embeddings, MLM head, tied decoder) is copied; with
    ``random`` the layers keep a fresh (seeded) initialisation.

    Raises:
        UsageError: see `layer_indices`.
    """
    indices = layer_indices(teacher.config.num_hidden_layers, num_hidden_layers, init)
    config = teacher.config.__class__.from_dict({**teacher.config.to_dict(), "num_hidden_layers": num_hidden_layers})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = type(teacher)(config).to(next(teacher.parameters()).dtype)
    state = student.state_dict()
    stack = _stack_prefix(teacher)
    for name, tensor in teacher.state_dict().items():
        if not name.startswith(stack):
            state[name] = tensor.detach().clone()
        elif indices is not None:
            index, rest = name[len(stack) :].split(".", 1)
            if int(index) in indices:
                state[f"{stack}{indices.index(int(index))}.{rest}"] = tensor.detach().clone()
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    log.info("student with %d layers, init %s from teacher layers %s", num_hidden_layers, init, indices)
    return student


def _stack_prefix(model) -> str:
    stack = modeling.layers(model)
    for name, module in model.named_modules():
        if module is stack:
            return name + "."
    raise RuntimeError("layer stack not found")


def distill_step(
    student, teacher, batch: dict[str, torch.Tensor], cfg: DistillConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss of one masked batch (teacher without gradients, same inputs for both)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        teacher_logits = teacher(**inputs).logits  # [batch, seq, vocab]
    student_logits = student(**inputs).logits  # [batch, seq, vocab]
    return distill_loss(student_logits, teacher_logits, batch["labels"], batch["attention_mask"], cfg)


def distill(student, teacher, tokenizer, texts: list[str], heldout: list[str], cfg: DistillConfig, *, device=None):
    """Train ``student`` on ``alpha * MLM + (1 - alpha) * KD`` against ``teacher``.

    Args:
        student: a ``...ForMaskedLM`` with the teacher's vocabulary (e.g. from `init_student`).
        teacher: the teacher, kept frozen.
        tokenizer: the shared tokenizer.
        texts: training text, one sentence or document a line.
        heldout: text for model selection.
        cfg: a `DistillConfig`; ``steps`` wins over ``epochs``; 0 steps return the student untouched.
        device: where training runs (default: the student's device); both models go back afterwards.

    Returns:
        ``(student, tokenizer, metrics)`` with the best held-out checkpoint loaded; metrics hold
        ``params, steps, loss_start, loss_end, heldout_loss, best_step, tokens, seconds``.

    Raises:
        UsageError: when the vocabularies differ or the text is empty.
        FloatingPointError: when the loss becomes NaN or infinite.
    """
    if student.config.vocab_size != teacher.config.vocab_size:
        raise UsageError(
            f"student vocabulary {student.config.vocab_size} differs from the teacher's {teacher.config.vocab_size}: "
            "trim the teacher the same way first"
        )
    teacher.eval()
    trainable = [p for p in teacher.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    home = next(teacher.parameters()).device
    try:
        if device is not None:
            teacher.to(device)
        metrics = train_loop(
            student, tokenizer, texts, heldout,
            lambda model, batch: distill_step(model, teacher, batch, cfg),
            steps=cfg.steps, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            max_length=cfg.max_length, mlm_probability=cfg.mlm_probability, weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, eval_every=cfg.eval_every, seed=cfg.seed,
            bf16=cfg.bf16, device=device, desc="distill",
        )
    finally:
        teacher.to(home)
        for parameter in trainable:
            parameter.requires_grad_(True)
    return student, tokenizer, metrics


def train_loop(
    model,
    tokenizer,
    texts: list[str],
    heldout: list[str],
    compute_loss: LossFn,
    *,
    steps: int | None,
    epochs: float = 1.0,
    lr: float,
    batch_size: int,
    grad_accum: int = 1,
    max_length: int = 512,
    mlm_probability: float = 0.15,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    grad_clip: float | None = 1.0,
    eval_every: int = 500,
    seed: int = 0,
    bf16: bool = True,
    device=None,
    desc: str = "train",
) -> dict:
    """AdamW with linear decay over masked batches of ``texts``; keeps the best held-out checkpoint.

    Held-out batches are masked with a fixed seed, so their losses compare across evaluations. bf16
    autocast is used only on CUDA. ``model`` is trained in place and returned to its device.

    Returns:
        ``params, steps, loss_start, loss_end`` (means of the first and last step losses: ten, or a
        quarter of the run when shorter),
        ``heldout_loss`` (best), ``heldout_loss_start``, ``best_step``, ``tokens``, ``seconds``.

    Raises:
        UsageError: when ``texts`` holds no usable line.
        FloatingPointError: when a step loss is NaN or infinite.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    length = min(max_length, max_positions(model.config))
    rows, heldout_rows = encode(tokenizer, texts, length), encode(tokenizer, heldout, length)
    if not rows:
        raise UsageError("the training corpus is empty after tokenisation")
    heldout_rows = heldout_rows or rows[: batch_size * 4]
    per_epoch = math.ceil(len(rows) / batch_size)
    total = steps if steps is not None else math.ceil(epochs * per_epoch / grad_accum)
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    model.to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda" else contextlib.nullcontext()
    )
    vocab_size = model.config.vocab_size

    def heldout_loss() -> float:
        model.eval()
        held_gen = torch.Generator().manual_seed(seed + 1)
        losses = []
        with torch.no_grad(), autocast:
            batches = mlm_batches(
                tokenizer, heldout_rows, batch_size, mlm_probability, held_gen, vocab_size=vocab_size, shuffle=False
            )
            for batch in batches:
                losses.append(float(compute_loss(model, _to(batch, device))[0]))
        model.train()
        return sum(losses) / len(losses)

    metrics = {"steps": total, "loss_start": None, "loss_end": None, "tokens": 0, "best_step": 0}
    if total == 0:
        model.to(home)
        return {**metrics, "params": model.num_parameters(), "heldout_loss": None, "seconds": 0.0}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear(step, warmup_steps, total))
    best = heldout_loss()
    metrics["heldout_loss_start"] = best
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    losses: list[float] = []
    started = time.perf_counter()
    batches = _forever(tokenizer, rows, batch_size, mlm_probability, generator, vocab_size)
    model.train()
    progress = tqdm(range(1, total + 1), desc=desc, disable=None, leave=False)
    for step in progress:
        step_loss = 0.0
        for _ in range(grad_accum):
            batch = _to(next(batches), device)
            with autocast:
                loss, _ = compute_loss(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {float(loss.detach())} at step {step}")
            (loss / grad_accum).backward()
            step_loss += float(loss.detach()) / grad_accum
            metrics["tokens"] += int(batch["attention_mask"].sum())
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        progress.set_postfix(loss=f"{step_loss:.4f}")
        if step % eval_every == 0 or step == total:
            current = heldout_loss()
            log.debug("%s step %d: loss %.4f, held-out %.4f", desc, step, step_loss, current)
            if current < best:
                best, metrics["best_step"] = current, step
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    progress.close()
    model.load_state_dict(best_state)
    model.to(home)
    model.eval()
    window = max(1, min(10, len(losses) // 4))  # a quarter of the run at most, so start and end differ
    metrics.update(
        params=model.num_parameters(),
        loss_start=sum(losses[:window]) / window,
        loss_end=sum(losses[-window:]) / window,
        heldout_loss=best,
        seconds=time.perf_counter() - started,
    )
    log.info("%s: %d steps, loss %.4f -> %.4f, best held-out %.4f at step %d", desc, total,
             metrics["loss_start"], metrics["loss_end"], best, metrics["best_step"])
    return metrics


def _linear(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _forever(tokenizer, rows, batch_size, probability, generator, vocab_size) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from mlm_batches(tokenizer, rows, batch_size, probability, generator, vocab_size=vocab_size)


def _to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def add_training_arguments(parser: argparse.ArgumentParser, defaults) -> None:
    """Options shared by ``adapt`` and ``distill``: corpus, held-out text, steps and optimiser."""
    parser.add_argument("--corpus", required=True, help="training text: a file, a folder or hf:org/name")
    parser.add_argument("--heldout", default=None, help="held-out text (default: the corpus' last 5%%)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--max-lines", type=int, default=None, help="read at most this many corpus lines")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def read_training_text(args) -> tuple[list[str], list[str]]:
    """(train, heldout) lines from ``--corpus`` and ``--heldout`` (or the corpus' tail)."""
    from pipeline.config import CorpusSource

    texts = read_corpus(CorpusSource(source=args.corpus, max_lines=args.max_lines))
    if args.heldout:
        return texts, read_corpus(args.heldout)
    return split_heldout(texts)


def default_device(name: str | None) -> str:
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher directory or hub id")
    parser.add_argument("--layers", type=int, default=None, help="student layers (not with --student)")
    parser.add_argument("--init", choices=INITS, default="stride")
    parser.add_argument("--student", default=None, help="distil into this student directory instead")
    add_training_arguments(parser, DistillConfig)
    parser.add_argument("--epochs", type=float, default=DistillConfig.epochs)
    parser.add_argument("--alpha", type=float, default=DistillConfig.alpha)
    parser.add_argument("--kd-loss", choices=("mse", "kl"), default=DistillConfig.kd_loss)
    parser.add_argument("--temperature", type=float, default=DistillConfig.temperature)
    parser.add_argument("--no-mask-padding", action="store_true", help="count padding in the MSE (reference)")
    parser.add_argument("--grad-accum", type=int, default=DistillConfig.grad_accum)


def main(args: argparse.Namespace) -> int:
    if (args.layers is None) == (args.student is None):
        raise UsageError("give either --layers (a new student) or --student DIR")
    cfg = DistillConfig(
        alpha=args.alpha, kd_loss=args.kd_loss, temperature=args.temperature, mask_padding=not args.no_mask_padding,
        lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum, steps=args.steps, epochs=args.epochs,
        max_length=args.max_length, eval_every=args.eval_every, seed=args.seed,
    )
    teacher, tokenizer = modeling.load(args.teacher)
    if args.student:
        student, tokenizer = modeling.load(args.student)
        extra = {"student": args.student}
    else:
        student = init_student(teacher, args.layers, args.init, seed=args.seed)
        indices = layer_indices(teacher.config.num_hidden_layers, args.layers, args.init)
        extra = {"init": args.init, "teacher_layers": indices}
    texts, heldout = read_training_text(args)
    device = default_device(args.device)
    student, tokenizer, metrics = distill(student, teacher, tokenizer, texts, heldout, cfg, device=device)
    modeling.save(student, tokenizer, args.out)
    modeling.write_metrics(args.out, {**metrics, **extra})
    return 0
