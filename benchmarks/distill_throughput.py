"""Throughput and peak memory of distillation steps: the reference fp32 loop against ours.

An XLM-R-base-shaped teacher (12 layers, hidden 768, FFN 3072, vocabulary 250,002; random weights)
distils into a 6-layer stride-initialised student on random 512-token sequences. Variants:

- ``reference``: fp32, MSE over every position (padding counted), as the paper's scripts train;
- ``ours``: `pipeline.distill.distill_step` (padding masked; the fused, chunked logit loss of
  `pipeline.losses.distill_loss`, which keeps no float32 copy of the logits) under bf16 autocast on CUDA;
- vocabulary 250k (full) or 40k (trimmed before distilling), several batch sizes.

Prints a Markdown table with tokens/s, peak memory and the speed-up over the fp32 reference of the
same run, and writes the numbers with the command, commit, machine and date to
``results/distill-throughput-DEVICE-DATE.json`` (``--out``; a later run gets a new name; not with ``--small``). Needs only torch and transformers (no Ray, Pydantic or datasets), so it runs on a bare GPU
box: ``python benchmarks/distill_throughput.py`` (``--small`` for a CPU smoke run with tiny shapes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch
from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from provenance import fresh_path, provenance, write_json  # noqa: E402

from pipeline.config import DistillConfig  # noqa: E402
from pipeline.distill import distill_step, init_student  # noqa: E402
from pipeline.losses import kd_mse, mlm_loss  # noqa: E402
from pipeline.mlm import mask_tokens  # noqa: E402

log = logging.getLogger("distill_throughput")


@dataclasses.dataclass(frozen=True)
class Shape:
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    teacher_layers: int = 12
    student_layers: int = 6
    vocab: int = 250_002
    trimmed_vocab: int = 40_000
    seq_len: int = 512


SMALL = Shape(hidden=64, heads=4, ffn=128, teacher_layers=4, student_layers=2, vocab=5_000, trimmed_vocab=1_000, seq_len=64)


def build(shape: Shape, vocab: int, device: torch.device):
    """(teacher, student) with random weights; the student copies every other teacher layer."""
    config = XLMRobertaConfig(
        vocab_size=vocab, hidden_size=shape.hidden, num_attention_heads=shape.heads, intermediate_size=shape.ffn,
        num_hidden_layers=shape.teacher_layers, max_position_embeddings=shape.seq_len + 2, type_vocab_size=1,
    )
    torch.manual_seed(0)
    teacher = XLMRobertaForMaskedLM(config)
    student = init_student(teacher, shape.student_layers, "stride")
    return teacher.to(device).eval(), student.to(device).train()


def reference_step(student, teacher, batch, cfg: DistillConfig):
    """The reference scripts' loss: fp32, MSE over all positions and the whole vocabulary."""
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    student_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = cfg.alpha * mlm_loss(student_logits, batch["labels"]) + (1 - cfg.alpha) * kd_mse(student_logits, teacher_logits)
    return loss, {}


def random_batch(shape: Shape, vocab: int, batch_size: int, generator: torch.Generator, device) -> dict:
    ids = torch.randint(5, vocab - 1, (batch_size, shape.seq_len), generator=generator)
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    masked, labels = mask_tokens(ids, torch.tensor([0, 1, 2]), vocab - 1, vocab, 0.15, generator)
    return {"input_ids": masked.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


def measure(shape: Shape, variant: str, vocab: int, batch_size: int, steps: int, warmup: int, device) -> dict:
    """Tokens/s and peak memory of ``steps`` optimiser steps after ``warmup`` untimed ones."""
    ours = variant == "ours"
    cfg = DistillConfig(mask_padding=ours)
    teacher, student = build(shape, vocab, device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr)
    step_fn = distill_step if ours else reference_step
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if ours and device.type == "cuda" else contextlib.nullcontext()
    )
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    tokens, started = 0, None
    for index in range(warmup + steps):
        if index == warmup:
            _sync(device)
            started, tokens = time.perf_counter(), 0
        batch = random_batch(shape, vocab, batch_size, generator, device)
        with autocast:
            loss, _ = step_fn(student, teacher, batch, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch_size * shape.seq_len
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None  # JSON null
    return {"tokens_per_s": tokens / seconds, "peak_gib": peak, "loss": float(loss.detach())}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def variants(shape: Shape, batch_sizes: list[int], precision: str) -> list[tuple[str, str, int, int]]:
    """(label, variant, vocab, batch size); the first row is the fp32 baseline."""
    rows = [(f"reference fp32, vocab {shape.vocab:,}, batch {batch_sizes[0]}", "reference", shape.vocab, batch_sizes[0])]
    for vocab, name in ((shape.vocab, "full"), (shape.trimmed_vocab, "trimmed first")):
        for batch_size in batch_sizes:
            rows.append((f"ours {precision}, vocab {vocab:,} ({name}), batch {batch_size}", "ours", vocab, batch_size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes for a CPU smoke run")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated batch sizes")
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the shape's, 512)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder of the JSON result (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    shape = SMALL if args.small else Shape()
    if args.seq_len:
        shape = dataclasses.replace(shape, seq_len=args.seq_len)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d', time.gmtime())}; shape {shape}")
    print("| variant | tokens/s | peak GiB | vs fp32 reference |")
    print("|---|---:|---:|---:|")
    baseline, rows = None, []
    for label, variant, vocab, batch_size in variants(shape, batch_sizes, "bf16" if device.type == "cuda" else "fp32 (bf16 only on CUDA)"):
        log.info("measuring %s", label)
        try:
            result = measure(shape, variant, vocab, batch_size, args.steps, args.warmup, device)
        except torch.OutOfMemoryError:
            print(f"| {label} | out of memory | - | - |", flush=True)
            torch.cuda.empty_cache()
            rows.append({"variant": label, "vocab": vocab, "batch_size": batch_size, "out_of_memory": True})
            continue
        baseline = baseline or result["tokens_per_s"]
        ratio = result["tokens_per_s"] / baseline
        peak = "-" if result["peak_gib"] is None else f"{result['peak_gib']:.1f}"
        print(f"| {label} | {result['tokens_per_s']:,.0f} | {peak} | {ratio:.2f}x |", flush=True)
        rows.append({"variant": label, "vocab": vocab, "batch_size": batch_size, **result, "vs_reference": ratio})
    if not args.small:
        command = ["benchmarks/distill_throughput.py", *(sys.argv[1:] if argv is None else argv)]
        path = fresh_path(args.out, f"distill-throughput-{'gpu' if device.type == 'cuda' else 'cpu'}")
        write_json(path, {**provenance(command), "device": name, "shape": dataclasses.asdict(shape),
                          "steps": args.steps, "warmup": args.warmup, "rows": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
