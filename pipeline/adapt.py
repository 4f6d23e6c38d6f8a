"""Stage 0: continued masked-LM training of a teacher on target-language text, or a teacher from scratch.

`pretrain_from_scratch` builds a model from a config (a dict, a directory with ``config.json`` and
maybe a tokenizer, or a ``config.json`` path) and trains it with the same loop, so a teacher can be
made offline; ``adapt --from-scratch DIR --vocab-size N`` also trains the tokenizer on the corpus. The
loop is `pipeline.training.train_loop` with the plain MLM loss, whose output head runs only at the
masked positions (the loss reads nothing else; at an 8k vocabulary that saves a third of a step).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from pipeline import modeling
from pipeline.config import AdaptConfig
from pipeline.errors import UsageError
from pipeline.families import family_of
from pipeline.losses import head_mlm_loss
from pipeline.modeldir import TOKENIZER_FILES
from pipeline.training import TrainConfig, add_training_arguments, default_device, read_training_text, train_loop

__all__ = ["adapt", "masked_lm_loss", "pretrain_from_scratch", "add_arguments", "main"]

log = logging.getLogger(__name__)


def masked_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the MLM head at the masked positions only, chunked over them
    (`pipeline.losses.head_mlm_loss`; equal to `pipeline.losses.mlm_loss` over full logits: the other
    positions carry label -100 and add nothing)."""
    encoder = modeling.base_model(model)
    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    loss = head_mlm_loss(modeling.lm_head(model), hidden, batch["labels"], model.config.vocab_size)
    return loss, {"mlm": float(loss.detach())}


def adapt(model, tokenizer, texts: list[str], heldout: list[str], cfg: AdaptConfig, *, device=None):
    """Continue MLM training of ``model`` on ``texts``; the best held-out checkpoint is kept.

    Args:
        model: a BERT or XLM-R ``...ForMaskedLM``, trained in place.
        tokenizer: its tokenizer, returned unchanged.
        texts: target-language training text.
        heldout: text for model selection.
        cfg: an `AdaptConfig`.
        device: where training runs (default: the model's device); the model goes back afterwards.

    Returns:
        ``(model, tokenizer, metrics)``; metrics hold ``params, steps, loss_start, loss_end, heldout_loss``.

    Raises:
        FloatingPointError: when the loss becomes NaN or infinite.
    """
    metrics = train_loop(model, tokenizer, texts, heldout, masked_lm_loss, TrainConfig.of(cfg), device=device,
                         desc="adapt")
    return model, tokenizer, metrics


def pretrain_from_scratch(
    config_or_dir: str | Path | dict, tokenizer, texts: list[str], heldout: list[str], cfg: AdaptConfig, *, device=None
):
    """Build a randomly initialised model from a config and train it with `adapt`.

    Args:
        config_or_dir: config values, a directory with ``config.json`` (and possibly a tokenizer) or a
            ``config.json`` path.
        tokenizer: the tokenizer to use; ``None`` loads the one in ``config_or_dir``.
        texts: training text.
        heldout: text for model selection.
        cfg: an `AdaptConfig` (``seed`` also seeds the initialisation).

    Returns:
        ``(model, tokenizer, metrics)``; the config's vocabulary size and special ids follow the tokenizer.

    Raises:
        UsageError: for a missing or unsupported config, or no tokenizer.
    """
    if isinstance(config_or_dir, dict):
        values, config_file, path = dict(config_or_dir), "the config", None
        if tokenizer is None:
            raise UsageError("a config given as values needs a tokenizer")
    else:
        values, config_file, path = _read_config(Path(config_or_dir))
    if tokenizer is None:
        if not path.is_dir():
            raise UsageError(f"{config_or_dir}: a config.json path needs --tokenizer")
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise UsageError(f"{config_or_dir}: no tokenizer in the directory; give --tokenizer")
        tokenizer = modeling.load_tokenizer(path)
    values.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if values["hidden_size"] % values["num_attention_heads"]:
        raise UsageError(
            f"{config_file}: hidden_size {values['hidden_size']} is not divisible by "
            f"num_attention_heads={values['num_attention_heads']}"
        )
    model_type = values.pop("model_type")
    config = AutoConfig.for_model(model_type, **{k: v for k, v in values.items() if k != "architectures"})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = AutoModelForMaskedLM.from_config(config)
    log.info("from scratch: %s, %d parameters", model_type, model.num_parameters())
    return adapt(model, tokenizer, texts, heldout, cfg, device=device)


def _read_config(path: Path) -> tuple[dict, Path, Path]:
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise UsageError(f"{path}: no config.json found")
    try:
        values = json.loads(config_file.read_text(encoding="utf-8"))
        family_of(values)
    except (json.JSONDecodeError, ValueError) as error:
        raise UsageError(f"{config_file}: {str(error).splitlines()[0]}") from None
    return values, config_file, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model directory or hub id to adapt")
    parser.add_argument("--from-scratch", default=None, metavar="CONFIG_OR_DIR",
                        help="build a new model from a config.json or a directory with one")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory for --from-scratch")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="--from-scratch: train a tokenizer of the config's family (Unigram for XLM-R, "
                             "WordPiece for BERT) with this many tokens on the training text")
    add_training_arguments(parser, AdaptConfig)
    parser.add_argument("--warmup-steps", type=int, default=AdaptConfig.warmup_steps)


def main(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.from_scratch is None):
        raise UsageError("give either --model (adapt it) or --from-scratch CONFIG_OR_DIR")
    cfg = AdaptConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, max_length=args.max_length,
                      eval_every=args.eval_every, seed=args.seed, warmup_steps=args.warmup_steps)
    texts, heldout = read_training_text(args)
    device = default_device(args.device)
    if args.vocab_size is not None and (args.tokenizer or not args.from_scratch):
        raise UsageError("--vocab-size trains the tokenizer of --from-scratch; it cannot go with --tokenizer or --model")
    if args.from_scratch:
        tokenizer = modeling.load_tokenizer(args.tokenizer) if args.tokenizer else None
        if args.vocab_size is not None:
            from pipeline.vocab import train_tokenizer

            family = family_of(_read_config(Path(args.from_scratch))[0]).name
            tokenizer = train_tokenizer(family, texts, args.vocab_size)
        model, tokenizer, metrics = pretrain_from_scratch(
            args.from_scratch, tokenizer, texts, heldout, cfg, device=device
        )
    else:
        model, tokenizer = modeling.load(args.model)
        model, tokenizer, metrics = adapt(model, tokenizer, texts, heldout, cfg, device=device)
    modeling.save_output(args.out, model, tokenizer, metrics)
    return 0
