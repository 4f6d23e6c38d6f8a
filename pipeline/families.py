"""What differs between the model families this project compresses: one table, read by every stage.

A `Family` names where the encoder and the MLM head live on a ``...ForMaskedLM`` model, which
state-dict tensors have one entry per vocabulary item, which tokenizer kind the family ships and
whether position ids start after the padding index. Nothing here imports torch or transformers, so
the dry run (`pipeline.sizes`, the search's spec checks) reads the same table as the stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FAMILIES", "Family", "family_named", "family_of", "max_positions", "scratch_config"]

# XLM-R's own default padding id (``XLMRobertaConfig().pad_token_id``); see `max_positions`.
_XLMR_DEFAULT_PAD = 1


@dataclass(frozen=True)
class Family:
    """The family-specific facts of a BERT-like masked-LM architecture.

    Attributes:
        name: short name used in reports and comparisons (``"xlmr"`` or ``"bert"``).
        model_types: the ``config.model_type`` values that belong to the family.
        encoder: attribute of the encoder on the MLM model (``model.roberta``).
        lm_head: dotted attribute path of the MLM head (``model.cls.predictions``).
        tokenizer: the tokenizer kind, ``"unigram"`` (SentencePiece) or ``"wordpiece"``.
        positions_after_padding: position ids start at ``pad_token_id + 1`` (RoBERTa's scheme),
            so that many rows of the position table are never used by a real token.
        model_type: the ``model_type`` of a new model of the family (`scratch_config`).
        special_ids: ``pad``, ``bos`` and ``eos`` ids of the tokenizers `pipeline.vocab` trains
            (``None`` where the family has no such token).
        type_vocab_size: token-type rows of a new model.
    """

    name: str
    model_types: tuple[str, ...]
    encoder: str
    lm_head: str
    tokenizer: str
    positions_after_padding: bool
    model_type: str
    special_ids: tuple[tuple[str, int | None], ...]
    type_vocab_size: int

    @property
    def word_embeddings(self) -> str:
        """State-dict key of the word embeddings, ``[vocab_size, hidden_size]``."""
        return f"{self.encoder}.embeddings.word_embeddings.weight"

    @property
    def vocab_tensors(self) -> tuple[str, ...]:
        """State-dict keys whose first dimension is ``vocab_size``.

        The word embeddings, the decoder weight tied to them, the decoder bias and the head bias
        tied to it.
        """
        head = self.lm_head
        return (self.word_embeddings, f"{head}.decoder.weight", f"{head}.decoder.bias", f"{head}.bias")


FAMILIES = (
    Family(
        name="xlmr",
        model_types=("xlm-roberta", "roberta", "camembert"),
        encoder="roberta",
        lm_head="lm_head",
        tokenizer="unigram",
        positions_after_padding=True,
        model_type="xlm-roberta",
        special_ids=(("pad_token_id", 1), ("bos_token_id", 0), ("eos_token_id", 2)),
        type_vocab_size=1,
    ),
    Family(
        name="bert",
        model_types=("bert",),
        encoder="bert",
        lm_head="cls.predictions",
        tokenizer="wordpiece",
        positions_after_padding=False,
        model_type="bert",
        special_ids=(("pad_token_id", 0),),
        type_vocab_size=2,
    ),
)

_BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def _get(config: Mapping[str, Any] | Any, key: str) -> Any:
    """``config[key]`` of a dict or ``config.key`` of a ``PretrainedConfig`` (``None`` when absent)."""
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def family_of(config: Mapping[str, Any] | Any) -> Family:
    """The family of a Hugging Face config.

    Args:
        config: a config dict (``config.json``, ``PretrainedConfig.to_dict()``) or a
            ``PretrainedConfig``.

    Returns:
        The `Family` whose ``model_types`` hold ``config``'s ``model_type``.

    Raises:
        ValueError: for a ``model_type`` this project does not compress; the message names it and
            the supported ones.
    """
    model_type = _get(config, "model_type")
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(f"model_type {model_type!r} is not supported; expected one of {sorted(_BY_MODEL_TYPE)}")
    return _BY_MODEL_TYPE[model_type]


def max_positions(config: Mapping[str, Any] | Any) -> int:
    """The longest input (special tokens included) that the model's position table allows.

    BERT uses every row of the table. XLM-R numbers positions from ``pad_token_id + 1``, so it
    loses ``pad_token_id + 1`` rows. A missing or ``None`` ``pad_token_id`` is read as 1, XLM-R's
    own default: that is what ``XLMRobertaConfig`` fills in when the key is absent, the model cannot
    run a forward pass with ``None`` at all, and 1 gives the shorter (never overflowing) limit.

    Args:
        config: a config dict or a ``PretrainedConfig``.

    Returns:
        ``max_position_embeddings`` less the rows the family never uses.

    Raises:
        ValueError: for an unsupported ``model_type`` (see `family_of`).
    """
    positions = int(_get(config, "max_position_embeddings"))
    if not family_of(config).positions_after_padding:
        return positions
    pad = _get(config, "pad_token_id")
    return positions - (int(pad) if pad is not None else _XLMR_DEFAULT_PAD) - 1


def family_named(name: str) -> Family:
    """The family called ``name`` (``"xlmr"`` or ``"bert"``).

    Raises:
        ValueError: for another name, listing the known ones.
    """
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown family {name!r}; expected one of {', '.join(f.name for f in FAMILIES)}")


def scratch_config(family: str, *, vocab_size: int, num_hidden_layers: int, hidden_size: int,
                   num_attention_heads: int, intermediate_size: int, max_length: int) -> dict[str, Any]:
    """The ``config.json`` values of a new model of ``family`` for inputs of up to ``max_length`` tokens.

    The special ids are those of the tokenizers `pipeline.vocab` trains, so a model built from this
    config and such a tokenizer agree; the position table has exactly the rows ``max_length`` needs.
    """
    chosen = family_named(family)
    pad = dict(chosen.special_ids)["pad_token_id"]
    offset = pad + 1 if chosen.positions_after_padding else 0
    return {
        "model_type": chosen.model_type, "vocab_size": vocab_size, "num_hidden_layers": num_hidden_layers,
        "hidden_size": hidden_size, "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size, "max_position_embeddings": max_length + offset,
        "type_vocab_size": chosen.type_vocab_size, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "layer_norm_eps": 1e-5 if chosen.positions_after_padding else 1e-12, **dict(chosen.special_ids),
    }
