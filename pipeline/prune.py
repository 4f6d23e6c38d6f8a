"""Stage 2: structured FFN pruning by first-order Taylor importance, heads re-ordered by importance.

One MLM forward/backward pass over held-out text accumulates, per layer ``l`` and FFN neuron ``i``,
``I[l, i] = sum over batches |sum_j dL/dW1[i, j] * W1[i, j] + dL/db1[i] * b1[i]|``, and per head the
``|dL/d gate|`` of a multiplicative gate of ones on that head's context (what ``head_mask`` gave in
transformers 4). The top ``F`` neurons of every layer are kept in descending importance, so one
``intermediate_size`` describes the model; heads are permuted, most important first, which changes
no output but makes the following hidden-size truncation keep the most useful dimensions.

The pass holds no memory it does not use: only the FFN input layers (and the head gates) get
gradients, the loss runs the MLM head at the masked positions only, chunked over them
(`pipeline.losses.head_mlm_loss`), and on CUDA the pass runs under bf16 autocast (``bf16``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time

import torch

from pipeline import modeling
from pipeline.config import PruneConfig
from pipeline.corpus import read_corpus
from pipeline.errors import UsageError
from pipeline.families import max_positions
from pipeline.losses import head_mlm_loss
from pipeline.mlm import encode, mlm_batches

__all__ = ["prune_ffn", "importance", "add_arguments", "main"]

log = logging.getLogger(__name__)


def importance(model, tokenizer, texts: list[str], cfg: PruneConfig,
               counts: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Taylor importance of FFN neurons and heads from one MLM pass over ``texts``.

    ``counts``, when given, receives ``batches`` and ``positions`` (padded positions the pass ran
    forward and backward, what its compute is proportional to).

    Returns:
        ``(ffn, heads)``: ``[num_layers, intermediate_size]`` and ``[num_layers, num_heads]``.
    """
    config = model.config
    rows = encode(tokenizer, texts, min(cfg.max_length, max_positions(config)))
    if not rows:
        raise UsageError("pruning needs held-out text: the corpus is empty after tokenisation")
    generator = torch.Generator().manual_seed(cfg.seed)
    stack = modeling.layers(model)
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    device = next(model.parameters()).device
    gates = torch.ones(len(stack), heads, device=device, requires_grad=True)
    hooks = []
    for index, layer in enumerate(stack):
        def gate_context(module, inputs, index=index):
            (context,) = inputs  # [batch, seq, hidden] = heads concatenated
            shape = context.shape
            gated = context.view(*shape[:-1], heads, head_dim) * gates[index].to(context.dtype)[:, None]
            return (gated.view(shape),)

        hooks.append(layer.attention.output.dense.register_forward_pre_hook(gate_context))
    ffn = torch.zeros(len(stack), config.intermediate_size)
    head_scores = torch.zeros(len(stack), heads)
    was_training = model.training
    model.eval()  # no dropout: the pass measures the model, it does not train it
    # gradients only where the scores read them: a full set would add a model's size of memory
    ffn_params = {id(p) for layer in stack for p in layer.intermediate.dense.parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in ffn_params]
    for parameter in frozen:
        parameter.requires_grad_(False)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    encoder, head = modeling.base_model(model), modeling.lm_head(model)
    try:
        for step, batch in enumerate(mlm_batches(tokenizer, rows, cfg.batch_size, 0.15, generator, shuffle=False)):
            if cfg.max_batches is not None and step >= cfg.max_batches:
                break
            batch = {key: value.to(device) for key, value in batch.items()}
            labels = batch.pop("labels")
            if counts is not None:
                counts["batches"] = counts.get("batches", 0) + 1
                counts["positions"] = counts.get("positions", 0) + labels.numel()
            model.zero_grad(set_to_none=True)
            gates.grad = None
            with autocast:
                hidden = encoder(**batch).last_hidden_state  # [batch, seq, hidden]
                loss = head_mlm_loss(head, hidden, labels, config.vocab_size)
            loss.backward()
            for index, layer in enumerate(stack):
                dense = layer.intermediate.dense
                score = (dense.weight.grad * dense.weight).sum(dim=1) + dense.bias.grad * dense.bias
                ffn[index] += score.detach().abs().float().cpu()
            head_scores += gates.grad.detach().abs().float().cpu()
    finally:
        for hook in hooks:
            hook.remove()
        for parameter in frozen:
            parameter.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return ffn, head_scores


def prune_ffn(model, tokenizer, intermediate_size: int, texts: list[str], cfg: PruneConfig, *, device=None):
    """Keep the ``intermediate_size`` most important FFN neurons of every layer.

    Args:
        model: a BERT or XLM-R ``...ForMaskedLM`` (left unchanged).
        tokenizer: its tokenizer, returned unchanged.
        intermediate_size: ``F``, at most the model's current FFN width.
        texts: held-out text for the importance pass.
        cfg: a `PruneConfig`.
        device: where the importance pass runs (default: where the model is).

    Returns:
        ``(model, tokenizer, metrics)``: a new model with ``config.intermediate_size == F`` on the
        original model's device; metrics hold ``params``, ``intermediate_size``, ``batches``,
        ``positions`` and ``seconds`` of the importance pass (on CUDA also ``peak_cuda_bytes``).

    Raises:
        UsageError: when ``F`` is larger than the current width or below 1.
    """
    width = model.config.intermediate_size
    if not 1 <= intermediate_size <= width:
        raise UsageError(f"FFN size {intermediate_size} must be between 1 and the model's {width}")
    home = next(model.parameters()).device
    model.to(device or home)
    counts: dict = {}
    started = time.perf_counter()
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        ffn, heads = importance(model, tokenizer, texts, cfg, counts)
        counts["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    else:
        ffn, heads = importance(model, tokenizer, texts, cfg, counts)
    counts["seconds"] = time.perf_counter() - started
    model.to(home)
    keep = ffn.argsort(dim=1, descending=True)[:, :intermediate_size]  # [layers, F]
    head_order = heads.argsort(dim=1, descending=True) if cfg.reorder_heads else None
    # the model's own tensors: the new model copies them in, so a clone would only hold a third copy
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    prefix = {id(layer): None for layer in modeling.layers(model)}
    for name, module in model.named_modules():
        if id(module) in prefix:
            prefix[id(module)] = name
    for index, layer in enumerate(modeling.layers(model)):
        p = prefix[id(layer)]
        rows = keep[index]  # [F]
        for key in ("weight", "bias"):  # [F, H] and [F]
            name = f"{p}.intermediate.dense.{key}"
            state[name] = modeling.select(state[name], (0,), rows)
        name = f"{p}.output.dense.weight"  # [H, F]
        state[name] = modeling.select(state[name], (1,), rows)
        if head_order is not None:
            dims = (head_order[index][:, None] * head_dim + torch.arange(head_dim)).flatten()  # [H]
            for proj in ("query", "key", "value"):
                for key in ("weight", "bias"):  # [H, H] and [H]: output rows are head dimensions
                    name = f"{p}.attention.self.{proj}.{key}"
                    state[name] = modeling.select(state[name], (0,), dims)
            name = f"{p}.attention.output.dense.weight"  # [H, H]: input columns are head dimensions
            state[name] = modeling.select(state[name], (1,), dims)
    new = modeling.rebuild(model, state, intermediate_size=intermediate_size)
    log.info("pruned FFN %d -> %d in %d layers", width, intermediate_size, len(keep))
    return new, tokenizer, {"params": new.num_parameters(), "intermediate_size": intermediate_size, **counts}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--ffn", type=int, required=True, help="FFN neurons to keep per layer")
    parser.add_argument("--corpus", required=True, help="held-out text for the importance pass")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=PruneConfig.batch_size)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=PruneConfig.max_length)
    parser.add_argument("--device", default=None)


def main(args: argparse.Namespace) -> int:
    texts = read_corpus(args.corpus)
    model, tokenizer = modeling.load(args.model)
    cfg = PruneConfig(batch_size=args.batch_size, max_batches=args.max_batches, max_length=args.max_length)
    model, tokenizer, metrics = prune_ffn(model, tokenizer, args.ffn, texts, cfg, device=args.device)
    modeling.save_output(args.out, model, tokenizer, metrics)
    return 0
