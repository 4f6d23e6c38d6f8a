"""Size on disk and median inference latency of a saved model, on the runtime it is deployed on."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import LatencyConfig
from pipeline.families import max_positions

__all__ = ["disk_mb", "latency_ms"]


def disk_mb(model_dir: str | Path) -> float:
    """Megabytes (10^6 bytes) of every file under ``model_dir``."""
    return sum(path.stat().st_size for path in Path(model_dir).rglob("*") if path.is_file()) / 1e6


def latency_ms(model_dir: str | Path, cfg: LatencyConfig = LatencyConfig(), *, device: str | None = None,
               onnx_dir: str | Path | None = None) -> float:
    """Median wall time of one forward pass of the encoder on ``cfg.runtime``, in milliseconds.

    The input is ``cfg.batch`` sequences of ``cfg.seq_len`` token ids (capped by the position table),
    all attended; ``cfg.warmup`` untimed passes come first. torch and ONNX Runtime both run with
    ``cfg.threads`` intra-op threads.

    Args:
        model_dir: a saved ``...ForMaskedLM`` (Hugging Face directory).
        cfg: runtime, shape, threads, repeats.
        device: torch device for the ``torch`` runtime (default: CPU); ONNX runtimes run on the CPU.
        onnx_dir: a folder that already holds ``model.onnx`` / ``model.int8.onnx`` (an export); without
            it, the ONNX runtimes export (and quantize) into a temporary folder first.

    Returns:
        The median, a positive finite number.
    """
    from pipeline import modeling, runtimes

    config = modeling.load_config(model_dir)
    seq_len = min(cfg.seq_len, max_positions(config))
    rng = np.random.default_rng(0)
    input_ids = rng.integers(5, config["vocab_size"], size=(cfg.batch, seq_len), dtype=np.int64)
    attention_mask = np.ones_like(input_ids)
    with tempfile.TemporaryDirectory(prefix="latency-") as scratch, runtimes.threads(cfg.threads):
        onnx_path = None
        if cfg.runtime != "torch":
            onnx_path = runtimes.onnx_file(onnx_dir, cfg.runtime) if onnx_dir is not None else None
            if onnx_path is None or not onnx_path.is_file():
                onnx_path = runtimes.to_onnx(model_dir, Path(scratch) / "model.onnx")
                if cfg.runtime == "onnx-int8":
                    onnx_path = runtimes.to_int8(onnx_path, Path(scratch) / "model.int8.onnx")
        run = runtimes.encoder_fn(cfg.runtime, model_dir, threads_count=cfg.threads, onnx_path=onnx_path,
                                  device=device)
        times = []
        for index in range(cfg.warmup + cfg.repeats):
            start = time.perf_counter()
            run(input_ids, attention_mask)
            if index >= cfg.warmup:
                times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    if not (median > 0 and math.isfinite(median)):
        raise RuntimeError(f"latency of {model_dir} on {cfg.runtime} measured as {median} ms")
    return median
