"""The training loop of adaptation and distillation: AdamW, linear decay, best held-out checkpoint.

`train_loop` trains a masked-LM model on masked batches of text with a loss the caller supplies
(plain MLM in `pipeline.adapt`, MLM plus KD in `pipeline.distill`). Its settings are one
`TrainConfig`, made from a stage config by `TrainConfig.of`. A terminal gets a tqdm bar; every run,
terminal or not, logs an INFO line every 5% of its steps (at most 20 lines) with the loss, the time
spent and an estimate of the time left. The command-line options both training commands share live
here too.

Multi-fidelity (`Fidelity`): a run may stop at a rung (a step short of ``steps``; the learning-rate
schedule stays that of ``steps``, so a rung is a prefix of the full run), save what it needs to go on
(current and best weights, optimiser, scheduler, random states, the position in the data) and later
continue from there. Rungs are always held-out checkpoints, so a run stopped at rungs and continued
ends with the same weights as one trained straight through.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from pipeline.config import AdaptConfig, CorpusSource, DistillConfig
from pipeline.corpus import read_corpus, split_heldout
from pipeline.errors import UsageError
from pipeline.families import max_positions
from pipeline.mlm import collate, encode, mask_tokens, mlm_batches

__all__ = [
    "PROGRESS_LINES",
    "Fidelity",
    "LossFn",
    "TrainConfig",
    "add_training_arguments",
    "default_device",
    "read_training_text",
    "train_loop",
]

log = logging.getLogger(__name__)

# progress lines a run logs at most: one every ceil(total / PROGRESS_LINES) steps
PROGRESS_LINES = 20

# (model, batch) -> (loss, parts); the batch holds input_ids, attention_mask, labels on the device
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The settings of `train_loop`; defaults serve the fields a stage config does not have.

    Attributes:
        steps: optimiser steps; ``None`` derives them from ``epochs``.
        epochs: passes over the training text when ``steps`` is ``None``.
        lr: peak AdamW learning rate.
        batch_size: sequences per forward pass.
        grad_accum: forward passes per optimiser step.
        max_length: longest sequence in tokens (capped by the model's position table).
        mlm_probability: share of maskable tokens chosen.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up before the linear decay.
        grad_clip: largest gradient norm; ``None`` or 0 clips nothing.
        eval_every: steps between held-out evaluations (the last step is always evaluated).
        seed: seeds torch, the batch order and the masking.
        bf16: bf16 autocast (on CUDA only).
        pack: train on rows of exactly ``max_length`` tokens cut from the joined texts
            (`pipeline.mlm.encode`); held-out text is packed alike.
        heldout_rows: held-out rows (sequences) each evaluation scores, the first ones every time;
            ``None`` scores them all.
        best_weights: where the best held-out weights so far are kept: ``"memory"`` (a copy in CPU
            memory), ``"file"`` (a safetensors file in the run's scratch folder), or ``"auto"``: CPU
            memory when training on an accelerator, a file when training on the CPU, where a copy in
            memory would take as much RAM as the model. The results are the same either way.
    """

    steps: int | None
    epochs: float = 1.0
    lr: float
    batch_size: int
    grad_accum: int = 1
    max_length: int = 512
    mlm_probability: float = 0.15
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    eval_every: int = 500
    seed: int = 0
    bf16: bool = True
    pack: bool = False
    heldout_rows: int | None = None
    best_weights: Literal["auto", "memory", "file"] = "auto"

    @classmethod
    def of(cls, stage: AdaptConfig | DistillConfig) -> TrainConfig:
        """The loop settings of a stage config: its fields of the same names, defaults for the rest.

        An `AdaptConfig` has no ``epochs``, ``grad_accum`` or ``grad_clip``, so adaptation runs with
        1 epoch, no accumulation and a gradient clip of 1.0.

        Args:
            stage: a `DistillConfig` or `AdaptConfig` (any object with ``steps``, ``lr`` and
                ``batch_size``).

        Returns:
            The `TrainConfig` with ``stage``'s values.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        return cls(**{name: getattr(stage, name) for name in names if hasattr(stage, name)})


@dataclass(frozen=True)
class Fidelity:
    """Where a run stops, and what it continues from.

    Attributes:
        stop_at: the step to stop at (at most ``TrainConfig.steps``); the run is a prefix of the full one.
            0 trains nothing: the model comes back as it was given (a rung before any training, where a
            student is judged on what the training-free stages left).
        rungs: every rung of the search; each is a held-out checkpoint, in a stopped run and a straight one.
        resume: a state file a shorter run of the same settings saved, to continue from; None: start.
        save: where to save the state at ``stop_at``, for a longer run to continue; None: nowhere.
    """

    stop_at: int
    rungs: tuple[int, ...] = ()
    resume: str | None = None
    save: str | None = None


def train_loop(
    model,
    tokenizer,
    texts: list[str],
    heldout: list[str],
    compute_loss: LossFn,
    cfg: TrainConfig,
    *,
    device=None,
    desc: str = "train",
    fidelity: Fidelity | None = None,
    scratch: str | Path | None = None,
) -> dict:
    """AdamW with linear decay over masked batches of ``texts``; keeps the best held-out checkpoint.

    Held-out batches are masked with a fixed seed, so their losses compare across evaluations. bf16
    autocast is used only on CUDA. ``model`` is trained in place and returned to its device.

    Args:
        model: a ``...ForMaskedLM``, trained in place.
        tokenizer: its tokenizer.
        texts: training text, one sentence or document a line.
        heldout: text for model selection (empty: the first training rows).
        compute_loss: the loss of one batch, see `LossFn`.
        cfg: the loop's settings.
        device: where training runs (default: the model's device).
        desc: the name in the progress bar, the log lines and error messages.
        fidelity: stop early and save, or continue a stopped run (see `Fidelity`); None: the full run.
        scratch: the folder of a best-weights file (``cfg.best_weights``; default: the system's temp folder).

    Returns:
        ``params, steps, loss_start, loss_end`` (means of the first and last step losses: ten, or a
        quarter of the run when shorter),
        ``heldout_loss`` (best), ``heldout_loss_start``, ``best_step``, ``tokens`` (trained on),
        ``heldout_evals`` (held-out passes) and ``heldout_tokens`` (tokens of one pass), ``seconds``;
        with a fidelity also ``stop_at`` (``steps`` stays the schedule's length) and ``resumed_from``.
        A continued run counts its tokens and held-out passes from the start of the schedule. On CUDA
        also ``peak_cuda_bytes``, the most memory torch allocated on the device during the run.

    Raises:
        UsageError: when ``texts`` holds no usable line, or the fidelity does not fit the run.
        FloatingPointError: when a step loss is NaN or infinite.
    """
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    length = min(cfg.max_length, max_positions(model.config))
    rows = encode(tokenizer, texts, length, pack=cfg.pack)
    heldout_rows = encode(tokenizer, heldout, length, pack=cfg.pack)
    if not rows:
        raise UsageError("the training corpus is empty after tokenisation")
    heldout_rows = (heldout_rows or rows[: cfg.batch_size * 4])[: cfg.heldout_rows]
    heldout_tokens = sum(len(row) for row in heldout_rows)
    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * per_epoch / cfg.grad_accum)
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda" else contextlib.nullcontext()
    )
    vocab_size = model.config.vocab_size

    def heldout_loss() -> float:
        model.eval()
        held_gen = torch.Generator().manual_seed(cfg.seed + 1)
        losses = []
        with torch.no_grad(), autocast:
            batches = mlm_batches(
                tokenizer, heldout_rows, cfg.batch_size, cfg.mlm_probability, held_gen, vocab_size=vocab_size,
                shuffle=False,
            )
            for batch in batches:
                losses.append(float(compute_loss(model, _to(batch, device))[0]))
        model.train()
        metrics["heldout_evals"] += 1
        return sum(losses) / len(losses)

    metrics = {"steps": total, "loss_start": None, "loss_end": None, "tokens": 0, "best_step": 0,
               "heldout_evals": 0, "heldout_tokens": heldout_tokens}
    stop = total if fidelity is None else fidelity.stop_at
    if total == 0 or stop == 0:
        model.to(home)
        if fidelity is not None:
            metrics.update(stop_at=stop, resumed_from=0)
        return {**metrics, "params": model.num_parameters(), "heldout_loss": None, "seconds": 0.0}
    if not 1 <= stop <= total:
        raise UsageError(f"{desc}: cannot stop at step {stop} of a {total}-step run")
    rungs = set(fidelity.rungs if fidelity else ()) | {stop}
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear(step, cfg.warmup_steps, total))
    batches = _Stream(tokenizer, rows, cfg.batch_size, cfg.mlm_probability, generator, vocab_size)
    losses: list[float] = []
    seconds = 0.0
    kept = cfg.best_weights if cfg.best_weights != "auto" else ("file" if device.type == "cpu" else "memory")
    with _BestWeights(kept, scratch) as best_state:
        if fidelity is not None and fidelity.resume:
            first, best, state, losses, seconds = _restore(fidelity.resume, model, optimizer, scheduler, batches,
                                                           metrics, stop, desc)
            best_state.keep_state(state)
        else:
            first = 1
            best = heldout_loss()
            metrics["heldout_loss_start"] = best
            best_state.keep(model)
        best = _train(model, cfg, compute_loss, heldout_loss, optimizer, scheduler, batches, losses, metrics,
                      best, best_state, first=first, stop=stop, total=total, rungs=rungs, seconds=seconds,
                      device=device, autocast=autocast, desc=desc, fidelity=fidelity)
        del optimizer, scheduler  # the best weights come back where the optimiser's state was
        best_state.load_into(model)
    model.to(home)
    model.eval()
    window = max(1, min(10, len(losses) // 4))  # a quarter of the run at most, so start and end differ
    metrics.update(
        params=model.num_parameters(),
        loss_start=sum(losses[:window]) / window,
        loss_end=sum(losses[-window:]) / window,
        heldout_loss=best,
    )
    if device.type == "cuda":
        metrics["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    log.info("%s: %d of %d steps, loss %.4f -> %.4f, best held-out %.4f at step %d", desc, stop, total,
             metrics["loss_start"], metrics["loss_end"], best, metrics["best_step"])
    return metrics


def _train(model, cfg: TrainConfig, compute_loss: LossFn, heldout_loss, optimizer, scheduler, batches, losses,
           metrics, best, best_state, *, first, stop, total, rungs, seconds, device, autocast, desc, fidelity):
    """The steps ``first..stop`` of `train_loop`, held-out checkpoints included; returns the best held-out loss."""
    every, logged = math.ceil(total / PROGRESS_LINES), first - 1
    started = time.perf_counter() - seconds
    model.train()
    progress = tqdm(range(first, stop + 1), desc=desc, disable=None, leave=False)
    for step in progress:
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            batch = _to(next(batches), device)
            with autocast:
                loss, _ = compute_loss(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {float(loss.detach())} at step {step}")
            (loss / cfg.grad_accum).backward()
            step_loss += float(loss.detach()) / cfg.grad_accum
            metrics["tokens"] += int(batch["attention_mask"].sum())
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        progress.set_postfix(loss=f"{step_loss:.4f}")
        if step % every == 0 or step == stop:
            _log_progress(desc, step, total, losses[logged:], time.perf_counter() - started)
            logged = step
        if step % cfg.eval_every == 0 or step == total or step in rungs:
            current = heldout_loss()
            log.debug("%s step %d: loss %.4f, held-out %.4f", desc, step, step_loss, current)
            if current < best:
                best, metrics["best_step"] = current, step
                best_state.keep(model)
    progress.close()
    if fidelity is not None:
        metrics.update(stop_at=stop, resumed_from=first - 1)
        if fidelity.save:
            _save(fidelity.save, stop, model, optimizer, scheduler, batches, metrics, best, best_state.state(), losses,
                  time.perf_counter() - started)
    metrics["seconds"] = time.perf_counter() - started
    return best


class _BestWeights:
    """The best held-out weights so far, off the training device: in CPU memory (``"memory"``) or in a
    safetensors file (``"file"``) under ``scratch``, removed when the run ends. A tensor that shares its
    storage with another (the decoder tied to the word embeddings) is written once. Either way the same
    values come back, so where they are kept never changes a result."""

    def __init__(self, where: str, scratch: str | Path | None = None):
        self.where, self.scratch = where, scratch
        self.tensors: dict[str, torch.Tensor] | None = None
        self.folder: str | None = None

    def __enter__(self) -> _BestWeights:
        if self.where == "file":
            if self.scratch is not None:
                Path(self.scratch).mkdir(parents=True, exist_ok=True)
            self.folder = tempfile.mkdtemp(prefix=".best-weights-", dir=self.scratch)
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            Path(self.folder, "best.safetensors").unlink(missing_ok=True)
            os.rmdir(self.folder)

    @property
    def path(self) -> str:
        return os.path.join(self.folder, "best.safetensors")

    def keep(self, model) -> None:
        """Keep ``model``'s current weights as the best ones."""
        self.keep_state(model.state_dict())

    def keep_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.where == "memory":
            self.tensors = {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}
            return
        from safetensors.torch import save_file

        tensors, aliases, seen = {}, {}, {}
        for name, tensor in state.items():
            where = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
            if tensor.numel() and where in seen:
                aliases[name] = seen[where]
                continue
            seen[where] = name
            tensors[name] = tensor.detach().cpu().contiguous()
        tmp = self.path + ".tmp"
        save_file(tensors, tmp, metadata={"aliases": json.dumps(aliases)})
        os.replace(tmp, self.path)

    def state(self) -> dict[str, torch.Tensor]:
        """The best weights as a state dict (read from the file in ``"file"`` mode)."""
        if self.where == "memory":
            return self.tensors
        from safetensors import safe_open

        with safe_open(self.path, framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            aliases = json.loads(handle.metadata()["aliases"])
        return {**tensors, **{name: tensors[target] for name, target in aliases.items()}}

    def load_into(self, model) -> None:
        """Copy the best weights into ``model``, one tensor at a time from a file."""
        if self.where == "memory":
            model.load_state_dict(self.tensors)
            return
        from safetensors import safe_open

        target = model.state_dict()
        with safe_open(self.path, framework="pt") as handle, torch.no_grad():
            aliases = json.loads(handle.metadata()["aliases"])
            stored = set(handle.keys()) | set(aliases)
            if stored != set(target):
                raise RuntimeError(f"best weights hold {sorted(stored ^ set(target))[:3]}... unlike the model")
            for name, tensor in target.items():
                tensor.copy_(handle.get_tensor(aliases.get(name, name)))


def _save(path, step, model, optimizer, scheduler, batches, metrics, best, best_state, losses, seconds) -> None:
    """Everything a longer run needs to continue exactly where this one stopped, as one safetensors file
    (tensors) whose metadata holds the rest as JSON: no pickle is written or read."""
    from safetensors.torch import save_file

    state = {
        "step": step, "model": {k: v.detach() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "stream": batches.state(),
        "torch_rng": torch.get_rng_state(), "best": best, "best_state": best_state, "losses": losses,
        "seconds": seconds,
        "metrics": {k: metrics.get(k) for k in ("tokens", "best_step", "heldout_loss_start", "heldout_evals")},
    }
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors, set())
    save_file(tensors, str(path), metadata={"state": json.dumps(tree)})


def _flatten(value, tensors: dict, seen: set):
    """``value`` as JSON, each tensor replaced by {"$t": name} (stored in ``tensors``) and each dict by
    {"$d": [[key, value], ...]}, so that integer keys (an optimizer's parameter ids) stay integers."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        if tensor.data_ptr() in seen and tensor.numel():  # safetensors refuses shared memory
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        name = f"t{len(tensors)}"
        tensors[name] = tensor
        return {"$t": name}
    if isinstance(value, dict):
        return {"$d": [[key, _flatten(item, tensors, seen)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(item, tensors, seen) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"training state holds a {type(value).__name__}, which is not saved")


def _unflatten(tree, tensors: dict):
    if isinstance(tree, dict):
        if "$t" in tree:
            return tensors[tree["$t"]]
        return {key: _unflatten(item, tensors) for key, item in tree["$d"]}
    if isinstance(tree, list):
        return [_unflatten(item, tensors) for item in tree]
    return tree


def _restore(path, model, optimizer, scheduler, batches, metrics, stop, desc):
    """Load a saved state into the run; returns (first step, best loss, best weights, losses, seconds)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        state = _unflatten(json.loads(handle.metadata()["state"]), tensors)
    if state["step"] >= stop:
        raise UsageError(f"{desc}: the saved state is at step {state['step']}, not before step {stop}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    batches.restore(state["stream"])
    torch.set_rng_state(state["torch_rng"])
    metrics.update({key: value for key, value in state["metrics"].items() if value is not None})
    log.info("%s: continuing from step %d", desc, state["step"])
    return state["step"] + 1, state["best"], state["best_state"], list(state["losses"]), state["seconds"]


def _log_progress(desc: str, step: int, total: int, recent: list[float], elapsed: float) -> None:
    """One INFO line: the step, the mean loss since the previous line, time spent and time left."""
    left = elapsed / step * (total - step)
    log.info("%s step %d/%d: loss %.4f, %s elapsed, about %s left", desc, step, total,
             sum(recent) / len(recent), _clock(elapsed), _clock(left))


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))  # H:MM:SS


def _linear(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class _Stream:
    """Masked batches of ``rows`` for ever, epoch after epoch, with a state to save and restore.

    Draws from ``generator`` exactly as repeated `pipeline.mlm.mlm_batches` passes do (a permutation
    per epoch, then each batch's masking), so a resumed stream goes on with the very same batches.
    """

    def __init__(self, tokenizer, rows, batch_size, probability, generator, vocab_size):
        self.tokenizer, self.rows, self.batch_size = tokenizer, rows, batch_size
        self.probability, self.generator, self.vocab_size = probability, generator, vocab_size
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.order: list[int] = []
        self.position = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.position >= len(self.order):
            self.order, self.position = torch.randperm(len(self.rows), generator=self.generator).tolist(), 0
        chosen = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        batch = collate([self.rows[i] for i in chosen], self.tokenizer.pad_token_id)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], self.special_ids, self.tokenizer.mask_token_id, self.vocab_size, self.probability,
            self.generator,
        )
        return batch

    def state(self) -> dict:
        return {"generator": self.generator.get_state(), "order": list(self.order), "position": self.position}

    def restore(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = list(state["order"]), state["position"]


def _to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def add_training_arguments(parser: argparse.ArgumentParser, defaults: AdaptConfig | DistillConfig) -> None:
    """Options shared by ``adapt`` and ``distill``: corpus, held-out text, steps and optimiser.

    Args:
        parser: the command's parser.
        defaults: the stage config class whose defaults the options show.
    """
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


def read_training_text(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``(train, heldout)`` lines from ``--corpus`` and ``--heldout`` (or the corpus' tail).

    Raises:
        UsageError: when a corpus cannot be read.
    """
    texts = read_corpus(CorpusSource(source=args.corpus, max_lines=args.max_lines))
    if args.heldout:
        return texts, read_corpus(args.heldout)
    return split_heldout(texts)


def default_device(name: str | None) -> str:
    """``name``, or ``"cuda"`` when a GPU is available, else ``"cpu"``."""
    return name or ("cuda" if torch.cuda.is_available() else "cpu")
