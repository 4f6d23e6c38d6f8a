"""Stage 4: keep the most frequent pieces of a target-language corpus plus every special token.

The kept ids stay in their old order (so ``<s> <pad> </s> <unk>`` stay 0-3 and ``<mask>`` last for
XLM-R; ``[PAD]`` stays 0 for BERT). Word embeddings, the tied decoder and the decoder bias are
re-indexed, and the tokenizer is rebuilt from the kept pieces: a Unigram tokenizer keeps their scores,
a WordPiece tokenizer gets the smaller vocabulary. Both segmenters can only choose among kept pieces,
and a segmentation made of kept pieces stays optimal (Unigram) or greedy-longest (WordPiece) under
the subset, so text whose pieces were all kept gets the same pieces and the same logits.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter

import torch
from transformers import BertTokenizer, XLMRobertaTokenizer

from pipeline import modeling
from pipeline.config import TrimVocabConfig
from pipeline.corpus import read_corpus
from pipeline.errors import UsageError
from pipeline.families import Family, family_of
from pipeline.vocab import unigram_pieces

__all__ = ["count_pieces", "kept_ids", "trim_vocab", "add_arguments", "main"]

log = logging.getLogger(__name__)

# the stock tokenizer class of each tokenizer kind of `pipeline.families`
_TOKENIZERS = {"unigram": XLMRobertaTokenizer, "wordpiece": BertTokenizer}


def count_pieces(tokenizer, texts: list[str], counting: str = "frequency") -> Counter:
    """Occurrences (or documents containing it) of every token id in ``texts``, without special tokens."""
    counts: Counter = Counter()
    for start in range(0, len(texts), 1000):
        for ids in tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"]:
            counts.update(set(ids) if counting == "document" else ids)
    return counts


def kept_ids(tokenizer, texts: list[str], vocab_size: int, cfg: TrimVocabConfig) -> tuple[list[int], Counter]:
    """The old ids to keep, ascending: every special token plus the most frequent pieces.

    Raises:
        UsageError: when ``vocab_size`` leaves no room beside the special tokens.
    """
    specials = sorted(set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder))
    if vocab_size <= len(specials):
        raise UsageError(f"vocabulary size {vocab_size} leaves no room beside {len(specials)} special tokens")
    counts = count_pieces(tokenizer, texts, cfg.counting)
    candidates = [
        (-count, index) for index, count in counts.items() if count >= cfg.min_count and index not in specials
    ]
    chosen = [index for _, index in sorted(candidates)[: vocab_size - len(specials)]]
    return sorted(set(specials) | set(chosen)), counts


def trim_vocab(model, tokenizer, texts: list[str], vocab_size: int, cfg: TrimVocabConfig):
    """Keep at most ``vocab_size`` tokens (special tokens included) by corpus frequency.

    Args:
        model: a BERT or XLM-R ``...ForMaskedLM`` (left unchanged).
        tokenizer: its tokenizer, the stock class of the family's kind (XLM-R: ``XLMRobertaTokenizer``,
            Unigram; BERT: ``BertTokenizer``, WordPiece).
        texts: target-language text to count pieces on.
        vocab_size: the largest vocabulary the result may have; fewer when fewer pieces reach
            ``cfg.min_count``.
        cfg: a `TrimVocabConfig` (``min_count``, ``counting``).

    Returns:
        ``(model, tokenizer, metrics)``; metrics hold ``params``, ``vocab_size`` and ``coverage`` (the
        share of corpus tokens that are kept pieces).

    Raises:
        UsageError: for a size larger than the current vocabulary, too small for the specials, or a
            tokenizer that is not the stock class of the model family's kind.
    """
    old_size = model.config.vocab_size
    if vocab_size > old_size:
        raise UsageError(f"vocabulary size {vocab_size} is larger than the model's {old_size}")
    family = family_of(model.config)
    keep, counts = kept_ids(tokenizer, texts, vocab_size, cfg)
    new_tokenizer = _rebuild_tokenizer(tokenizer, keep, family)
    index = torch.tensor(keep, dtype=torch.long)  # [new vocab_size], ascending old ids
    state = {
        name: modeling.select(tensor, (0,) if name in family.vocab_tensors else (), index)
        for name, tensor in model.state_dict().items()
    }
    changes = {"vocab_size": len(keep)}
    for token in ("pad", "bos", "eos", "sep", "cls"):
        new_id = getattr(new_tokenizer, f"{token}_token_id", None)
        if getattr(model.config, f"{token}_token_id", None) is not None and new_id is not None:
            changes[f"{token}_token_id"] = new_id
    new = modeling.rebuild(model, state, **changes)
    covered = sum(counts[i] for i in keep)
    metrics = {
        "params": new.num_parameters(),
        "vocab_size": len(keep),
        "coverage": covered / max(1, sum(counts.values())),
    }
    log.info("trimmed vocabulary %d -> %d (coverage %.4f)", old_size, len(keep), metrics["coverage"])
    return new, new_tokenizer, metrics


def _rebuild_tokenizer(tokenizer, keep: list[int], family: Family):
    """The stock tokenizer class over the kept ids, in their old order, with the old settings.

    Raises:
        UsageError: when ``tokenizer`` is not the stock class of the family's tokenizer kind.
    """
    expected = _TOKENIZERS[family.tokenizer]
    if not isinstance(tokenizer, expected):
        raise UsageError(
            f"tokenizer {type(tokenizer).__name__} is not supported: the {family.name} family needs "
            f"{expected.__name__} ({family.tokenizer})"
        )
    common = {"model_max_length": tokenizer.model_max_length}
    if family.tokenizer == "unigram":
        pieces = unigram_pieces(tokenizer)
        if pieces[3][0] != tokenizer.unk_token:
            raise UsageError("XLM-R tokenizer must have <unk> at id 3 to be rebuilt")
        new = XLMRobertaTokenizer(
            vocab=[pieces[i] for i in keep], add_prefix_space=getattr(tokenizer, "add_prefix_space", True), **common
        )
        new.backend_tokenizer.normalizer = tokenizer.backend_tokenizer.normalizer
        return new
    inverse = {index: token for token, index in tokenizer.get_vocab().items()}
    return BertTokenizer(
        vocab={inverse[old]: new for new, old in enumerate(keep)},
        do_lower_case=tokenizer.do_lower_case,
        tokenize_chinese_chars=tokenizer.tokenize_chinese_chars,
        strip_accents=tokenizer.strip_accents,
        **common,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--corpus", required=True, help="target-language text to count pieces on")
    parser.add_argument("--vocab-size", type=int, required=True, help="final vocabulary size incl. special tokens")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--min-count", type=int, default=TrimVocabConfig.min_count)
    parser.add_argument("--counting", choices=("frequency", "document"), default=TrimVocabConfig.counting)


def main(args: argparse.Namespace) -> int:
    texts = read_corpus(args.corpus)
    model, tokenizer = modeling.load(args.model)
    cfg = TrimVocabConfig(min_count=args.min_count, counting=args.counting)
    model, tokenizer, metrics = trim_vocab(model, tokenizer, texts, args.vocab_size, cfg)
    modeling.save(model, tokenizer, args.out)
    modeling.write_metrics(args.out, metrics)
    return 0
