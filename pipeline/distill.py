"""Stages 1 and 3b: distil a teacher into a student with fewer layers (or into a given student).

The student is the teacher's config with fewer layers; its layers are copied from the teacher layers
an init strategy names, everything outside the layer stack is copied. The loss is
``alpha * MLM + (1 - alpha) * KD`` on one masked batch that teacher and student both see; AdamW with
linear decay; the checkpoint with the lowest held-out loss is returned. The loop is
`pipeline.training.train_loop`, shared with `pipeline.adapt` (plain MLM).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from pipeline import modeling
from pipeline.config import DistillConfig
from pipeline.errors import UsageError
from pipeline.losses import distill_loss
from pipeline.training import Fidelity, TrainConfig, add_training_arguments, default_device, read_training_text, train_loop

__all__ = ["layer_indices", "init_student", "distill", "distill_step", "add_arguments", "main"]

log = logging.getLogger(__name__)

INITS = ("stride", "last_k", "first_k", "first_last_k", "random")


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
    ``random`` the layers are those of a fresh Hugging Face initialisation after
    ``torch.manual_seed(seed)``, so the same seed gives the same weights. Torch's global random
    state is left as it was. The student is in training mode.

    Args:
        teacher: a BERT or XLM-R ``...ForMaskedLM`` (left unchanged).
        num_hidden_layers: the student's layer count ``k``.
        init: a strategy of `INITS`.
        seed: seeds the initialisation of ``random`` layers.

    Returns:
        The student, of the teacher's class and dtype.

    Raises:
        UsageError: see `layer_indices`.
    """
    indices = layer_indices(teacher.config.num_hidden_layers, num_hidden_layers, init)
    stack, teacher_state = _stack_prefix(teacher), teacher.state_dict()
    state = {name: tensor.detach() for name, tensor in teacher_state.items() if not name.startswith(stack)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if indices is None:
            layers = modeling.fresh(teacher, num_hidden_layers=num_hidden_layers).state_dict()
            state.update({name: tensor for name, tensor in layers.items() if name.startswith(stack)})
        else:
            state.update(_renumbered_layers(teacher_state, stack, indices))
        student = modeling.rebuild(teacher, state, num_hidden_layers=num_hidden_layers)
    student.train()  # a new student trains next, as the stock constructor leaves it
    log.info("student with %d layers, init %s from teacher layers %s", num_hidden_layers, init, indices)
    return student


def _renumbered_layers(state: dict[str, torch.Tensor], stack: str, indices: list[int]) -> dict[str, torch.Tensor]:
    """Teacher layer ``indices[i]`` of ``state`` as layer ``i``; the other layers are left out."""
    layers = {}
    for name, tensor in state.items():
        if name.startswith(stack):
            index, rest = name[len(stack) :].split(".", 1)
            if int(index) in indices:
                layers[f"{stack}{indices.index(int(index))}.{rest}"] = tensor.detach()
    return layers


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


def distill(student, teacher, tokenizer, texts: list[str], heldout: list[str], cfg: DistillConfig, *, device=None,
            fidelity: Fidelity | None = None, scratch=None):
    """Train ``student`` on ``alpha * MLM + (1 - alpha) * KD`` against ``teacher``.

    Args:
        student: a ``...ForMaskedLM`` with the teacher's vocabulary (e.g. from `init_student`).
        teacher: the teacher, kept frozen.
        tokenizer: the shared tokenizer.
        texts: training text, one sentence or document a line.
        heldout: text for model selection.
        cfg: a `DistillConfig`; ``steps`` wins over ``epochs``; 0 steps return the student untouched.
        device: where training runs (default: the student's device); both models go back afterwards.
        fidelity: stop at a rung and save, or continue a stopped run (`pipeline.training.Fidelity`).
        scratch: a folder for the best weights while training on the CPU (default: the temp folder).

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
            TrainConfig.of(cfg), device=device, desc="distill", fidelity=fidelity, scratch=scratch,
        )
    finally:
        teacher.to(home)
        for parameter in trainable:
            parameter.requires_grad_(True)
    return student, tokenizer, metrics


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
    parser.add_argument("--heldout-rows", type=int, default=DistillConfig.heldout_rows,
                        help="held-out rows each evaluation scores (default %(default)s; 0: all)")


def main(args: argparse.Namespace) -> int:
    if (args.layers is None) == (args.student is None):
        raise UsageError("give either --layers (a new student) or --student DIR")
    cfg = DistillConfig(
        alpha=args.alpha, kd_loss=args.kd_loss, temperature=args.temperature, mask_padding=not args.no_mask_padding,
        lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum, steps=args.steps, epochs=args.epochs,
        max_length=args.max_length, eval_every=args.eval_every, seed=args.seed, heldout_rows=args.heldout_rows or None,
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
    out_parent = Path(args.out).expanduser().parent
    student, tokenizer, metrics = distill(student, teacher, tokenizer, texts, heldout, cfg, device=device,
                                          scratch=out_parent if out_parent.is_dir() else None)
    modeling.save_output(args.out, student, tokenizer, {**metrics, **extra})
    return 0
