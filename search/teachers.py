"""The teacher's ``config.json`` without weights, tokenizer or torch: from a local directory,
`pipeline.synthetic`, the Hugging Face cache or hub, or a built-in copy for well-known teachers.

Errors are ``OSError``/``ValueError``/``ImportError`` with a one-line message; `search.spec` turns
them into a `SpecError` naming ``teacher.model``.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["BUILTIN_TEACHER_CONFIGS", "one_line", "read_teacher_config"]

logger = logging.getLogger(__name__)


# config.json of well-known teachers, for machines that cannot reach the hub (sizes are exact).
_XLMR_BASE = {
    "architectures": ["XLMRobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514, "model_type": "xlm-roberta", "num_attention_heads": 12,
    "num_hidden_layers": 12, "output_past": True, "pad_token_id": 1, "position_embedding_type": "absolute",
    "type_vocab_size": 1, "use_cache": True, "vocab_size": 250002,
}
_XLMR_LARGE = {**_XLMR_BASE, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24}
_MBERT = {
    "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "directionality": "bidi",
    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
    "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "pooler_fc_size": 768,
    "pooler_num_attention_heads": 12, "pooler_num_fc_layers": 3, "pooler_size_per_head": 128,
    "pooler_type": "first_token_transform", "type_vocab_size": 2, "vocab_size": 119547,
}
BUILTIN_TEACHER_CONFIGS: dict[str, dict[str, Any]] = {
    "FacebookAI/xlm-roberta-base": _XLMR_BASE,
    "xlm-roberta-base": _XLMR_BASE,
    "FacebookAI/xlm-roberta-large": _XLMR_LARGE,
    "xlm-roberta-large": _XLMR_LARGE,
    "google-bert/bert-base-multilingual-cased": _MBERT,
    "bert-base-multilingual-cased": _MBERT,
}

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_SYNTHETIC_TEACHER = re.compile(r"^synthetic:([\w.-]+)/teacher$")


def read_teacher_config(model: str) -> Mapping[str, Any]:
    """The config of ``model``: an absolute local path, ``synthetic:NAME/teacher`` or a hub id.

    Hub ids: the local Hugging Face cache, else a download of ``config.json`` (unless
    ``HF_HUB_OFFLINE``), else the built-in copy of a well-known teacher with a notice on stderr.
    """
    match = _SYNTHETIC_TEACHER.match(model)
    if match:
        return _synthetic_config(match.group(1))
    if model.startswith("synthetic:"):
        raise ValueError("a synthetic teacher is written synthetic:NAME/teacher")
    if os.path.isabs(model):
        return _local_config(Path(model))
    if not _HUB_ID.match(model):
        raise ValueError("neither a local directory nor a Hugging Face model id")
    return _hub_config(model)


def _synthetic_config(name: str) -> Mapping[str, Any]:
    try:
        synthetic = importlib.import_module("pipeline.synthetic")
    except ModuleNotFoundError as error:
        if error.name != "pipeline.synthetic":
            raise
        raise ImportError("synthetic teachers need pipeline.synthetic, which is not installed") from None
    return synthetic.teacher_config(name)


def _local_config(path: Path) -> Mapping[str, Any]:
    file = path if path.is_file() else path / "config.json"
    if not path.exists():
        raise FileNotFoundError("no such directory")
    if not file.is_file():
        raise FileNotFoundError("no config.json in this directory")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: not a JSON object")
    return config


@functools.lru_cache(maxsize=16)
def _hub_config(repo_id: str) -> Mapping[str, Any]:
    import huggingface_hub
    from huggingface_hub import constants

    cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return _local_config(Path(cached))
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    reason = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
    if not offline and _hub_reachable(constants.ENDPOINT):
        try:
            return _local_config(Path(huggingface_hub.hf_hub_download(repo_id, "config.json")))
        except Exception as error:  # noqa: BLE001 - any hub failure falls back to the table below
            reason = f"the hub answered: {one_line(error)}"
    if repo_id in BUILTIN_TEACHER_CONFIGS:
        logger.warning("teacher.model: %s is not in the local Hugging Face cache and %s; using its built-in config.json", repo_id, reason)
        return BUILTIN_TEACHER_CONFIGS[repo_id]
    raise FileNotFoundError(f"config.json is not in the local Hugging Face cache and {reason}")


def _hub_reachable(endpoint: str, timeout: float = 1.5) -> bool:
    """A quick TCP check, so an offline machine fails in milliseconds instead of retrying.
    Behind a proxy the direct check means nothing: then the download decides."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
