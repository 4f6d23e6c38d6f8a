"""Size on disk and median inference latency of a saved model."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM

from pipeline.families import max_positions
from pipeline.modeling import safe_kwargs

__all__ = ["disk_mb", "latency_ms"]


def disk_mb(model_dir: str | Path) -> float:
    """Megabytes (10^6 bytes) of every file under ``model_dir``."""
    return sum(path.stat().st_size for path in Path(model_dir).rglob("*") if path.is_file()) / 1e6


def latency_ms(
    model_dir: str | Path,
    batch_size: int = 1,
    seq_len: int = 128,
    device: str | None = None,
    repeats: int = 20,
    warmup: int = 3,
) -> float:
    """Median wall time of one forward pass of the encoder with its MLM head, in milliseconds.

    Args:
        model_dir: a saved ``...ForMaskedLM``.
        batch_size: sequences per forward pass.
        seq_len: tokens per sequence (capped by the position table).
        device: ``cpu``, ``cuda`` ... (default: cuda when available).
        repeats: timed passes; the median is returned.
        warmup: untimed passes first.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = AutoModelForMaskedLM.from_pretrained(model_dir, **safe_kwargs()).to(device).eval()
    config = model.config
    seq_len = min(seq_len, max_positions(config))
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, config.vocab_size, (batch_size, seq_len), generator=generator).to(device)
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(input_ids=input_ids)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
