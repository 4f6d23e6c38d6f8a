"""The runtimes a student is deployed on: PyTorch, ONNX Runtime fp32 and ONNX Runtime int8.

`to_onnx` exports the encoder of a saved ``...ForMaskedLM`` with ``torch.onnx.export`` (inputs
``input_ids`` and ``attention_mask`` of shape ``[batch, sequence]``, both axes dynamic; output
``last_hidden_state`` ``[batch, sequence, hidden_size]``), `to_int8` quantizes its weights with ONNX
Runtime's dynamic quantization, and `encoder_fn` gives one callable per runtime, numpy in and out,
so that checks and latency run the same code on every runtime. optimum's exporter does not support
transformers 5 (stack notes); the two library calls are used directly.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UsageError

__all__ = ["INPUTS", "OUTPUT", "Encoder", "available_cores", "encoder_fn", "load_encoder", "onnx_file", "threads", "to_int8",
           "to_onnx"]

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "last_hidden_state"
# The ONNX file of each ONNX runtime inside an export folder.
_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}

EncoderFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def onnx_file(folder: str | Path, runtime: str) -> Path:
    """Where an export folder keeps the graph of ``runtime`` (``onnx`` or ``onnx-int8``)."""
    return Path(folder) / _FILES[runtime]


def available_cores(*, busy: float | None = None) -> int:
    """The cores this process really has: its CPU affinity (capped by a cgroup v2 CPU quota), less the
    cores other processes keep busy (the one-minute load average, rounded), and at least one.

    More torch threads than free cores cost far more than they bring: measured here on 2 cores with
    another CPU-bound process running, a training step of the demo teacher took 0.4 s with one thread
    and 2.8-3.8 s with two (threads wait for each other at every parallel region).

    Args:
        busy: cores in use by others (default: ``os.getloadavg()[0]``, read before this process works).
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, cores - round(busy))


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the block, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Encoder(torch.nn.Module):
    """An encoder as the deployed graph: (input_ids, attention_mask) ``[batch, sequence]`` -> last hidden
    state ``[batch, sequence, hidden_size]``; no MLM head (a deployed encoder feeds a task head)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def load_encoder(model_dir: str | Path) -> Encoder:
    """The `Encoder` of a saved model of either family, with or without an MLM head (in eval mode).

    Raises:
        UsageError: when no model loads from ``model_dir``.
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from pipeline.modeling import safe_kwargs

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the MLM head's weights are left out on purpose
    try:
        encoder = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False, **safe_kwargs())
    except (OSError, ValueError) as error:
        raise UsageError(f"{model_dir}: cannot load the model ({_first_line(error)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return Encoder(encoder).eval()


def to_onnx(model_dir: str | Path, out: str | Path) -> Path:
    """Export the encoder of the model in ``model_dir`` to the ONNX file ``out``.

    One self-contained file, unless the weights pass ONNX's 2 GB protobuf limit (XLM-R large in fp32):
    then they go to ``out`` + ``.data`` beside it, which ONNX Runtime reads from there.

    Raises:
        UsageError: when the model does not load or the exporter fails (one line, with the reason).
    """
    encoder = load_encoder(model_dir)
    external = _weight_bytes(encoder) > _SINGLE_FILE_BYTES
    example = torch.full((1, 8), 5, dtype=torch.long), torch.ones((1, 8), dtype=torch.long)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {name: {0: batch, 1: sequence} for name in INPUTS}
    out = Path(out)
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx", "onnxscript", "onnx_ir"), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(encoder, example, str(out), input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_shapes=shapes, dynamo=True, external_data=external, verbose=False)
    except Exception as error:  # the exporter raises many kinds; a person needs the one line
        raise UsageError(f"{model_dir}: ONNX export failed ({_first_line(error)})") from None
    return out


def to_int8(onnx_path: str | Path, out: str | Path) -> Path:
    """``onnx_path`` with dynamically quantized int8 weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = Path(f"{onnx_path}.data").is_file()  # a graph too large for one file (see `to_onnx`)
    with _quiet("root", "onnxruntime"):  # quantize_dynamic logs a pre-processing hint on the root logger
        quantize_dynamic(str(onnx_path), str(out), weight_type=QuantType.QInt8, use_external_data_format=external)
    return Path(out)


_SINGLE_FILE_BYTES = 1_800_000_000  # below protobuf's 2 GB limit, with room for the graph itself


def _weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def encoder_fn(runtime: str, model_dir: str | Path, *, threads_count: int = 1, onnx_path: str | Path | None = None,
               device: str | None = None) -> EncoderFn:
    """A callable ``(input_ids, attention_mask) -> last_hidden_state`` (int64 arrays in, float32 out).

    Args:
        runtime: ``torch``, ``onnx`` or ``onnx-int8``.
        model_dir: the saved model (``torch``), or the folder holding the ONNX files.
        threads_count: intra-op threads of ONNX Runtime (torch's are set by the caller, see `threads`).
        onnx_path: the ONNX file to run, instead of the runtime's file in ``model_dir``.
        device: torch device for ``torch`` (default: CPU); ONNX runtimes run on the CPU.
    """
    if runtime == "torch":
        encoder = load_encoder(model_dir).to(device or "cpu")

        def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                output = encoder(torch.from_numpy(input_ids).to(device or "cpu"),
                                 torch.from_numpy(attention_mask).to(device or "cpu"))
                if output.device.type == "cuda":
                    torch.cuda.synchronize(output.device)
                return output.float().cpu().numpy()

        return run
    if runtime not in _FILES:
        raise UsageError(f"unknown runtime {runtime!r}: choose one of torch, {', '.join(_FILES)}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads_count
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    path = Path(onnx_path) if onnx_path is not None else onnx_file(model_dir, runtime)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    return run


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Loggers ``names`` (``root`` for the root logger) at ERROR for the block."""
    loggers = [logging.getLogger(None if name == "root" else name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__
