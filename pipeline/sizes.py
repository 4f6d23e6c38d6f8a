"""Exact parameter counts of encoder ``...ForMaskedLM`` models from their config alone.

Nothing here imports torch or transformers, so a dry run sizes a whole search space in milliseconds.
The count equals ``AutoModelForMaskedLM.from_config(config).num_parameters()`` for the BERT and
XLM-R (RoBERTa) families: the decoder weight is tied to the word embeddings and counted once, the
decoder bias is counted once, and the masked-LM models carry no pooler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline import families

__all__ = ["count_parameters", "config_parameters", "parameter_groups"]


def count_parameters(
    *,
    num_hidden_layers: int,
    hidden_size: int,
    intermediate_size: int,
    vocab_size: int,
    max_position_embeddings: int,
    type_vocab_size: int,
) -> int:
    """Parameters of a BERT/XLM-R masked-LM model with a tied decoder.

    Returns:
        embeddings (word, position, token type, LayerNorm) + layers + MLM head (transform dense,
        LayerNorm, decoder bias).
    """
    return sum(_groups(num_hidden_layers, hidden_size, intermediate_size, vocab_size, max_position_embeddings,
                       type_vocab_size).values())


def _groups(layers: int, h: int, f: int, vocab: int, positions: int, types: int) -> dict[str, int]:
    embeddings = (vocab + positions + types) * h + 2 * h
    # Q, K, V, attention output (4 h*h + 4 h), two LayerNorms (4 h), FFN in (h*f + f), FFN out (f*h + h).
    layer = 4 * h * h + 2 * h * f + 9 * h + f
    head = h * h + h + 2 * h + vocab
    return {"embeddings": embeddings, "layers": layers * layer, "head": head}


def parameter_groups(config: Mapping[str, Any]) -> dict[str, int]:
    """``{"embeddings", "layers", "head", "total"}`` parameters of a config's masked-LM model.

    ``embeddings``: word, position and token-type tables with their LayerNorm (the tied decoder is
    counted here, once); ``layers``: the transformer layers; ``head``: the MLM head's transform and
    decoder bias. The parts add up to ``total`` = `config_parameters`.
    """
    families.family_of(config)
    groups = _groups(int(config["num_hidden_layers"]), int(config["hidden_size"]), int(config["intermediate_size"]),
                     int(config["vocab_size"]), int(config["max_position_embeddings"]),
                     int(config.get("type_vocab_size", 2)))
    return {**groups, "total": sum(groups.values())}


def config_parameters(config: Mapping[str, Any], **overrides: int) -> int:
    """`count_parameters` for a config dict (``config.json`` or ``PretrainedConfig.to_dict()``).

    Args:
        config: the model's config; its ``model_type`` must be a supported family.
        overrides: replacement values for ``num_hidden_layers``, ``hidden_size``,
            ``intermediate_size`` or ``vocab_size``.
    """
    families.family_of(config)
    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")
    unknown = set(overrides) - set(keys)
    if unknown:
        raise TypeError(f"unknown size overrides: {sorted(unknown)}")
    sizes = {key: int(overrides.get(key, config[key])) for key in keys}
    return count_parameters(
        **sizes,
        max_position_embeddings=int(config["max_position_embeddings"]),
        type_vocab_size=int(config.get("type_vocab_size", 2)),
    )
