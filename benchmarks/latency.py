"""Latency of the teacher's shape and the paper's student shapes on every runtime, and what int8 costs
downstream.

Part 1, shapes: XLM-R-base-shaped models with random weights (the teacher, 12/768/3072 with 250,002
pieces, and the paper's students: 6/768/2048 full vocabulary, 6/564, 6/456 and 6/312 with FFN 2048 and
40,000 pieces), each timed on PyTorch, ONNX Runtime fp32 and ONNX Runtime dynamic int8 in one run
(`pipeline.measure.latency_ms`: median after warm-up, encoder to last hidden state), with the ONNX file
sizes and every time's ratio to the teacher in PyTorch.

Part 2, downstream: a model is fine-tuned on a real Maltese task (default UD Maltese-MUDT UPOS from
``../shared/data/mt/pos``), then its test split is scored three ways: PyTorch fp32, and the same
fine-tuned encoder exported to ONNX fp32 and int8 with the trained task head on top. ``--student DIR``
names the model (a student of a search, or any XLM-R/BERT directory with a tokenizer); by default a
small XLM-R-architecture model with a Unigram tokenizer trained on the Maltese raw text is fine-tuned
from random weights, which is enough to compare int8 with fp32 weights of one trained model.

Only torch, transformers and onnxruntime are needed (no Ray, MLflow or Pydantic). Prints Markdown and
writes the numbers with the command, commit, machine and date to ``results/latency-DATE.json`` (``--out``;
a later run gets a new name):

    python benchmarks/latency.py                       # the full run (minutes; XLM-R base is 1 GB)
    python benchmarks/latency.py --small               # a smoke run with tiny shapes and a tiny task run
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from provenance import fresh_path, provenance, write_json  # noqa: E402

from pipeline import runtimes  # noqa: E402
from pipeline.config import RUNTIMES, EvalConfig, LatencyConfig, TaskSource, TaskTraining  # noqa: E402
from pipeline.measure import latency_ms  # noqa: E402

log = logging.getLogger("latency")

# (name, layers, hidden, ffn, vocabulary, heads)
SHAPES = (
    ("teacher XLM-R base", 12, 768, 3072, 250_002, 12),
    ("paper 6/768/2048, full vocabulary", 6, 768, 2048, 250_002, 12),
    ("paper 6/564/2048, 40k", 6, 564, 2048, 40_000, 12),
    ("paper 6/456/2048, 40k", 6, 456, 2048, 40_000, 12),
    ("paper 6/312/2048, 40k (maximum compression)", 6, 312, 2048, 40_000, 12),
)
SMALL_SHAPES = (("teacher (tiny)", 4, 64, 256, 2_000, 4), ("student (tiny)", 2, 32, 128, 500, 4))


def build(folder: Path, layers: int, hidden: int, ffn: int, vocab: int, heads: int, positions: int) -> Path:
    """A random XLM-R-architecture masked LM of that shape, saved without a tokenizer (latency needs none)."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=positions + 2,
                              type_vocab_size=1, pad_token_id=1)
    XLMRobertaForMaskedLM(config).save_pretrained(folder)
    return folder


def shapes_table(shapes, cfg: LatencyConfig, scratch: Path) -> tuple[str, list[dict]]:
    """One row per shape: ms on each runtime, the ratio to the teacher in PyTorch, ONNX file sizes; as
    Markdown and as records."""
    rows, base, records = [], None, []
    for name, layers, hidden, ffn, vocab, heads in shapes:
        folder = build(scratch / name.split()[0].replace("/", "-") / str(hidden), layers, hidden, ffn, vocab, heads,
                       max(cfg.seq_len, 512))
        graph = runtimes.to_onnx(folder, runtimes.onnx_file(folder, "onnx"))
        runtimes.to_int8(graph, runtimes.onnx_file(folder, "onnx-int8"))
        times = {runtime: latency_ms(folder, dataclasses.replace(cfg, runtime=runtime), onnx_dir=folder)
                 for runtime in RUNTIMES}
        base = base or times["torch"]
        sizes = [runtimes.onnx_file(folder, runtime).stat().st_size / 1e6 for runtime in ("onnx", "onnx-int8")]
        cells = [f"{times[r]:.1f} ms ({base / times[r]:.1f}x)" for r in RUNTIMES]
        records.append({"shape": name, "layers": layers, "hidden": hidden, "ffn": ffn, "vocab": vocab, "ms": times,
                        "onnx_mb": dict(zip(("onnx", "onnx-int8"), sizes))})
        rows.append(f"| {name} | {layers}/{hidden}/{ffn}/{vocab:,} | " + " | ".join(cells)
                    + f" | {sizes[0]:,.1f} / {sizes[1]:,.1f} |")
        log.info("%s: %s", name, ", ".join(f"{r} {t:.1f} ms" for r, t in times.items()))
        for path in folder.iterdir():  # XLM-R base is 1 GB in fp32: free the disk before the next shape
            path.unlink()
    header = ("| shape | layers/hidden/FFN/vocab | PyTorch | ONNX Runtime fp32 | ONNX Runtime int8 | ONNX MB fp32 / int8 |\n"
              "|---|---|---:|---:|---:|---:|")
    return (f"Batch {cfg.batch}, sequence {cfg.seq_len}, {cfg.threads} thread(s), median of {cfg.repeats} after "
            f"{cfg.warmup} warm-up; ratios: speed-up over the first row in PyTorch.\n\n" + header + "\n"
            + "\n".join(rows)), records


def small_maltese_model(shared: Path, folder: Path, small: bool) -> Path:
    """A random XLM-R-architecture model with a Unigram tokenizer trained on Maltese raw text."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from pipeline.corpus import read_parseme
    from pipeline.vocab import train_unigram_tokenizer

    texts = read_parseme(shared / "mt" / "raw" / "train.parsemetsv")[: 2000 if small else 10_000]
    tokenizer = train_unigram_tokenizer(texts, 1000 if small else 8000)
    torch.manual_seed(0)
    hidden, layers, ffn = (64, 2, 256) if small else (256, 4, 1024)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=4, intermediate_size=ffn, max_position_embeddings=130,
                              type_vocab_size=1, pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    XLMRobertaForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class _OnnxTaskModel:
    """The trained task head on an ONNX Runtime encoder: ``(ids, mask) -> logits`` like the torch task model."""

    def __init__(self, run, head: torch.nn.Module):
        self.run, self.head = run, head.eval()

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.run(ids.numpy().astype(np.int64), mask.numpy().astype(np.int64))
        with torch.no_grad():
            return self.head(torch.from_numpy(hidden))


def downstream_table(model_dir: Path, task: str, data_dir: Path, training: TaskTraining, scratch: Path,
                     threads: int) -> tuple[str, dict]:
    """Fine-tune ``model_dir`` on ``task`` once, then score test with PyTorch, ONNX fp32 and ONNX int8."""
    # The evaluation's own training and scoring (pipeline.evaluate), so the scores are the ones a search reports.
    from pipeline.evaluate import train_task
    from pipeline.metrics import task_metric

    cfg = dataclasses.replace(EvalConfig(), method="finetune", seeds=(1,), scoring="word",
                              **{task: dataclasses.replace(training, method="finetune", select="last")})
    started = time.perf_counter()
    trained = train_task(str(model_dir), task, TaskSource(str(data_dir)), cfg, seed=1, device="cpu")
    model = trained.model
    log.info("fine-tuned %s on %s in %.0f s", model_dir, task, time.perf_counter() - started)
    sizes = trained.sizes()

    def score(predictor) -> float:
        return trained.score("test", predictor)

    fine_tuned = scratch / "fine-tuned"
    model.encoder.save_pretrained(fine_tuned)
    graph = runtimes.to_onnx(fine_tuned, runtimes.onnx_file(fine_tuned, "onnx"))
    runtimes.to_int8(graph, runtimes.onnx_file(fine_tuned, "onnx-int8"))
    scores = {"torch": score(model)}
    for runtime in ("onnx", "onnx-int8"):
        run = runtimes.encoder_fn(runtime, fine_tuned, threads_count=threads)
        scores[runtime] = score(_OnnxTaskModel(run, model.head))
    metric = task_metric(task)
    lines = [f"Model {model_dir} fine-tuned on {data_dir} ({sizes['train']} train sentences, {training.epochs} "
             f"epochs, lr {training.lr:g}), scored on {sizes['test']} test examples ({metric}).", "",
             f"| runtime | test {metric} | difference to PyTorch fp32 |", "|---|---:|---:|"]
    lines += [f"| {runtime} | {value:.4f} | {value - scores['torch']:+.4f} |" for runtime, value in scores.items()]
    return "\n".join(lines), {"model": str(model_dir), "task": task, "metric": metric, "test": scores,
                              "train_examples": sizes["train"], "test_examples": sizes["test"],
                              "epochs": training.epochs, "lr": training.lr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes and a tiny task run (a smoke test)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--student", type=Path, default=None, help="the model for part 2 (default: see above)")
    parser.add_argument("--task", default="pos", choices=("pos", "topic", "sentiment"))
    parser.add_argument("--data", type=Path, default=None, help="the task folder (default: ../shared/data/mt/TASK)")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 5; --small 1)")
    parser.add_argument("--skip-shapes", action="store_true")
    parser.add_argument("--skip-task", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="writes latency-DATE.json here (a new name if one exists; --small: not written)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    torch.set_num_threads(args.threads)
    cfg = LatencyConfig(batch=args.batch, seq_len=args.seq_len, threads=args.threads,
                        repeats=3 if args.small else args.repeats)
    repo = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("LRL_SHARED_DATA", repo.parent / "shared" / "data"))
    result = {**provenance(["benchmarks/latency.py", *(sys.argv[1:] if argv is None else argv)]),
              "settings": dataclasses.asdict(cfg)}
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as scratch:
        scratch = Path(scratch)
        if not args.skip_shapes:
            print("## Latency by shape and runtime\n")
            text, result["shapes"] = shapes_table(SMALL_SHAPES if args.small else SHAPES, cfg, scratch)
            print(text, flush=True)
        if not args.skip_task:
            model = args.student or small_maltese_model(shared, scratch / "maltese", args.small)
            training = TaskTraining(lr=1e-3 if args.student is None else 5e-5, epochs=args.epochs or (1 if args.small else 5),
                                    batch_size=32, max_length=128, select="last",
                                    max_train_examples=64 if args.small else None,
                                    max_eval_examples=64 if args.small else None)
            print(f"\n## {args.task}: int8 against fp32\n")
            text, result["downstream"] = downstream_table(model, args.task, args.data or shared / "mt" / args.task,
                                                          training, scratch, args.threads)
            print(text, flush=True)
    if not args.small:
        path = fresh_path(args.out, "latency")
        write_json(path, result)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
