"""Masked-LM batches: tokenise once, pad per batch, mask 15% of tokens (80% mask, 10% random, 10% kept).

Special tokens (``<s>``, ``</s>``, ``[CLS]``, padding ...) are never masked. Every batch has at least one
masked position, so the MLM loss is always defined.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["encode", "collate", "mask_tokens", "mlm_batches"]

# characters of a long text tokenised first when it is truncated to max_length tokens (per token)
_CHARS_PER_TOKEN = 16


def encode(tokenizer, texts: list[str], max_length: int, *, pack: bool = False) -> list[list[int]]:
    """Token ids of every text with special tokens, truncated to ``max_length``; empty texts are dropped.

    With ``pack``, the texts are joined instead (each ended by the separator token) and cut into rows
    of exactly ``max_length`` tokens, the last one shorter: no text is truncated and no position is
    padding, which on short lines of mixed length multiplies the real tokens a step trains on.
    """
    if not texts:
        return []  # the fast tokenizers fail on an empty batch
    if not pack:
        # A long text (a whole document) is tokenised up to a word boundary past what max_length tokens can
        # cover, not in full: the head's tokens are the text's first tokens (both families split words at
        # whitespace), so when they fill the row the row is the same. A head that does not fill it
        # (pieces longer than _CHARS_PER_TOKEN on average) is tokenised again in full.
        heads = [_head(text, max_length * _CHARS_PER_TOKEN) for text in texts]
        ids = tokenizer(heads, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
        short = [i for i, row in enumerate(ids) if len(heads[i]) < len(texts[i]) and len(row) < max_length]
        if short:
            again = tokenizer([texts[i] for i in short], truncation=True, max_length=max_length,
                              add_special_tokens=True)["input_ids"]
            for i, row in zip(short, again):
                ids[i] = row
        return [row for row in ids if len(row) > 2]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id  # <s> </s> (XLM-R), [CLS] [SEP] (BERT)
    body = max_length - 2
    stream: list[int] = []
    for start in range(0, len(texts), 2000):
        for piece in tokenizer(list(texts[start : start + 2000]), add_special_tokens=False)["input_ids"]:
            if piece:
                stream += piece + [sep]
    return [[cls, *stream[i : i + body], sep] for i in range(0, len(stream), body)]


def _head(text: str, chars: int) -> str:
    """``text`` up to its last whitespace before character ``chars`` (all of it when shorter, or when
    there is no whitespace there)."""
    if len(text) <= chars:
        return text
    cut = max(text.rfind(space, 0, chars) for space in " \t\n\r")
    return text[:cut] if cut > 0 else text


def collate(rows: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask``, both ``[batch, max_len]``."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def mask_tokens(
    input_ids: torch.Tensor,
    special_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ``input_ids`` ``[batch, seq]``.

    Args:
        input_ids: ``[batch, seq]`` token ids (not modified).
        special_ids: 1-D ids that are never masked (padding included).
        mask_token_id: id of the mask token.
        vocab_size: random replacements are drawn from ``[0, vocab_size)``.
        probability: share of maskable positions chosen.
        generator: the random source (seeded by the caller).

    Returns:
        ``(masked_ids, labels)``, both ``[batch, seq]``; labels are -100 where nothing is predicted.
    """
    maskable = ~torch.isin(input_ids, special_ids)
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & maskable
    if not chosen.any() and maskable.any():
        # one masked position at least, so the loss of a short batch is never NaN
        candidates = maskable.flatten().nonzero().squeeze(1)
        pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
        chosen.view(-1)[pick] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = mask_token_id
    random_positions = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[random_positions] = torch.randint(vocab_size, input_ids.shape, generator=generator)[random_positions]
    return masked, labels


def mlm_batches(
    tokenizer,
    rows: list[list[int]],
    batch_size: int,
    probability: float,
    generator: torch.Generator,
    *,
    vocab_size: int | None = None,
    shuffle: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over ``rows`` (from `encode`) as masked batches.

    Yields:
        dicts with ``input_ids``, ``attention_mask`` and ``labels``, each ``[batch, max_len]``.
    """
    order = torch.randperm(len(rows), generator=generator).tolist() if shuffle else range(len(rows))
    order = list(order)
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    vocab_size = vocab_size or len(tokenizer)
    for start in range(0, len(order), batch_size):
        batch = collate([rows[i] for i in order[start : start + batch_size]], tokenizer.pad_token_id)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], special_ids, tokenizer.mask_token_id, vocab_size, probability, generator
        )
        yield batch
