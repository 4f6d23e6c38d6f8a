"""Stage 4: keep the most frequent pieces of a target-language corpus plus every special token.

The kept ids stay in their old order (so ``<s> <pad> </s> <unk>`` stay 0-3 and ``<mask>`` last for
XLM-R; ``[PAD]`` stays 0 for BERT). Word embeddings, the tied decoder and the decoder bias are
re-indexed, and the tokenizer is rebuilt from the kept pieces: a Unigram tokenizer keeps their scores,
a WordPiece tokenizer gets the smaller vocabulary. Both segmenters can only choose among kept pieces,
and a segmentation made of kept pieces stays optimal (Unigram) or greedy-longest (WordPiece) under
the subset, so text whose pieces were all kept gets the same pieces and the same logits. Tokens added
on top of the segmentation model (``add_tokens``, extra special tokens, an XLM-R ``<mask>`` outside the
Unigram vocabulary) are always kept and added again after the kept pieces, with their flags.
"""

from __future__ import annotations

import argparse
import hashlib
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

__all__ = ["count_pieces", "kept_ids", "kept_specials", "shortfall", "trim_vocab", "add_arguments", "main"]

log = logging.getLogger(__name__)

# the stock tokenizer class of each tokenizer kind of `pipeline.families`
_TOKENIZERS = {"unigram": XLMRobertaTokenizer, "wordpiece": BertTokenizer}


# the counts of the last few (tokenizer, corpus, counting): every student of a search trims with the
# teacher's tokenizer over the same corpus, and counting a large corpus costs seconds each time
_COUNTS: dict[tuple[str, str, str], Counter] = {}
_KEPT_COUNTS = 4


def count_pieces(tokenizer, texts: list[str], counting: str = "frequency") -> Counter:
    """Occurrences (or documents containing it) of every token id in ``texts``, without special tokens.

    The result is remembered for the same tokenizer (its full serialisation: pieces, scores and
    normaliser), the same texts and the same counting, so a process that trims many students counts once.
    """
    key = _counts_key(tokenizer, texts, counting)
    if key is not None and key in _COUNTS:
        return Counter(_COUNTS[key])
    counts: Counter = Counter()
    for start in range(0, len(texts), 1000):
        for ids in tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"]:
            counts.update(set(ids) if counting == "document" else ids)
    if key is not None:
        while len(_COUNTS) >= _KEPT_COUNTS:
            _COUNTS.pop(next(iter(_COUNTS)))
        _COUNTS[key] = Counter(counts)
    return counts


def _counts_key(tokenizer, texts: list[str], counting: str) -> tuple[str, str, str] | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None  # a tokenizer without a serialisation: count every time
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\n")
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest(), digest.hexdigest(), counting


def kept_ids(tokenizer, texts: list[str], vocab_size: int, cfg: TrimVocabConfig) -> tuple[list[int], Counter]:
    """The old ids to keep, ascending: every special token plus the most frequent pieces.

    Raises:
        UsageError: when ``vocab_size`` leaves no room beside the special tokens.
    """
    specials = kept_specials(tokenizer)
    if vocab_size <= len(specials):
        raise UsageError(f"vocabulary size {vocab_size} leaves no room beside {len(specials)} special tokens")
    counts = count_pieces(tokenizer, texts, cfg.counting)
    candidates = [(-count, index) for index, count in counts.items() if count >= cfg.min_count and index not in specials]
    chosen = [index for _, index in sorted(candidates)[: vocab_size - len(specials)]]
    return sorted(set(specials) | set(chosen)), counts


def kept_specials(tokenizer) -> list[int]:
    """The ids trimming always keeps: special tokens and tokens added on top of the segmentation model."""
    return sorted(set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder))


def shortfall(vocab_size: int, kept: int, reaching: int, cfg: TrimVocabConfig, lines: int) -> str | None:
    """The sentence that says a trimmed vocabulary is smaller than asked, or None when it is not.

    Args:
        vocab_size: the size asked for, special tokens included.
        kept: the size kept.
        reaching: pieces (special tokens aside) that occur at least ``cfg.min_count`` times.
        cfg: the trimming settings.
        lines: the corpus' lines.
    """
    if kept >= vocab_size:
        return None
    counted = "documents" if cfg.counting == "document" else "times"
    return (f"kept {kept:,} of the {vocab_size:,} tokens asked: only {reaching:,} pieces occur at least "
            f"{cfg.min_count} {counted} (trim_vocab.min_count) in the {lines:,} corpus lines")


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
        ``(model, tokenizer, metrics)``; metrics hold ``params``, ``vocab_size`` (kept),
        ``vocab_size_asked``, ``pieces_at_min_count`` (pieces, special tokens aside, that reach
        ``cfg.min_count``), ``coverage`` (the share of corpus tokens that are kept pieces) and, when
        fewer tokens were kept than asked, ``note``: the sentence that says so (also logged as a warning).

    Raises:
        UsageError: for a size larger than the current vocabulary, too small for the specials, or a
            tokenizer that is not the stock class of the model family's kind.
    """
    old_size = model.config.vocab_size
    if vocab_size > old_size:
        raise UsageError(f"vocabulary size {vocab_size} is larger than the model's {old_size}")
    family = family_of(model.config)
    if len(tokenizer) > old_size:
        raise UsageError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {old_size}")
    keep, counts = kept_ids(tokenizer, texts, vocab_size, cfg)
    new_tokenizer = _rebuild_tokenizer(tokenizer, keep, family)
    old_vocab = tokenizer.get_vocab()
    new_ids = sorted((index, token) for token, index in new_tokenizer.get_vocab().items())
    index = torch.tensor([old_vocab[token] for _, token in new_ids], dtype=torch.long)  # [new vocab_size] old ids
    if [i for i, _ in new_ids] != list(range(len(keep))) or sorted(index.tolist()) != keep:
        raise RuntimeError("the rebuilt tokenizer does not hold exactly the kept tokens")  # a bug, not bad input
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
    specials = set(kept_specials(tokenizer))
    reaching = sum(1 for index, count in counts.items() if count >= cfg.min_count and index not in specials)
    metrics = {
        "params": new.num_parameters(),
        "vocab_size": len(keep),
        "vocab_size_asked": vocab_size,
        "pieces_at_min_count": reaching,
        "coverage": covered / max(1, sum(counts.values())),
    }
    note = shortfall(vocab_size, len(keep), reaching, cfg, len(texts))
    if note:
        metrics["note"] = note
        log.warning("trim-vocab: %s", note)
    log.info("trimmed vocabulary %d -> %d (coverage %.4f)", old_size, len(keep), metrics["coverage"])
    return new, new_tokenizer, metrics


def _rebuild_tokenizer(tokenizer, keep: list[int], family: Family):
    """The stock tokenizer class over the kept ids, in their old order, with the old settings.

    The segmentation model (Unigram pieces with their scores, or the WordPiece vocabulary) is rebuilt
    from the kept ids it holds; tokens added on top of it (``add_tokens``, or an XLM-R ``<mask>``
    outside the Unigram vocabulary) are added again with their flags, after the model's pieces as
    before, so every one of them survives, re-indexed.

    Raises:
        UsageError: when ``tokenizer`` is not the stock class of the family's tokenizer kind.
    """
    expected = _TOKENIZERS[family.tokenizer]
    if not isinstance(tokenizer, expected):
        raise UsageError(
            f"tokenizer {type(tokenizer).__name__} is not supported: the {family.name} family needs "
            f"{expected.__name__} ({family.tokenizer})"
        )
    model_size = tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=False)
    in_model = [index for index in keep if index < model_size]
    added = [tokenizer.added_tokens_decoder[index] for index in keep if index >= model_size]
    common = {"model_max_length": tokenizer.model_max_length}
    if family.tokenizer == "unigram":
        pieces = unigram_pieces(tokenizer)
        if pieces[3][0] != tokenizer.unk_token:
            raise UsageError("XLM-R tokenizer must have <unk> at id 3 to be rebuilt")
        new = XLMRobertaTokenizer(
            vocab=[pieces[i] for i in in_model], add_prefix_space=getattr(tokenizer, "add_prefix_space", True),
            **common,
        )
        new.backend_tokenizer.normalizer = tokenizer.backend_tokenizer.normalizer
    else:
        inverse = {index: token for token, index in tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False).items()}
        new = BertTokenizer(
            vocab={inverse[old]: new for new, old in enumerate(in_model)},
            do_lower_case=tokenizer.do_lower_case,
            tokenize_chinese_chars=tokenizer.tokenize_chinese_chars,
            strip_accents=tokenizer.strip_accents,
            **common,
        )
    extra_specials = {str(token) for token in getattr(tokenizer, "extra_special_tokens", None) or ()}
    for token in added:  # in their old order; one at a time so that each takes the next id
        if token.content in new.get_vocab():  # a special token the constructor added already (<mask>)
            continue
        if token.content in extra_specials:
            new.add_special_tokens({"extra_special_tokens": [token]}, replace_extra_special_tokens=False)
        else:
            new.add_tokens([token], special_tokens=token.special)
    return new


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
    modeling.save_output(args.out, model, tokenizer, metrics)
    return 0
