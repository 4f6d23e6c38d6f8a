"""Tokenizers trained in-process with `tokenizers`, in the exact shape the stock classes load.

The XLM-R family uses a SentencePiece-Unigram vocabulary (pieces with log-probability scores, ``<s>
<pad> </s> <unk>`` first and ``<mask>`` last, as in ``xlm-roberta-base``); the BERT family a WordPiece
vocabulary with ``[PAD] [UNK] [CLS] [SEP] [MASK]``. Both come back as the stock transformers
tokenizer classes, so ``save_pretrained`` writes a directory that ``AutoTokenizer`` loads.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer, XLMRobertaTokenizer

from pipeline.errors import UsageError
from pipeline.families import family_named

__all__ = ["add_arguments", "main", "train_tokenizer", "train_unigram_tokenizer", "train_wordpiece_tokenizer",
           "unigram_pieces"]

XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def unigram_pieces(tokenizer: XLMRobertaTokenizer | Tokenizer) -> list[tuple[str, float]]:
    """The ``(piece, score)`` list of a Unigram tokenizer (stock class or raw `tokenizers` one), in id order."""
    raw = tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer.backend_tokenizer
    state = json.loads(raw.to_str())
    return [(piece, float(score)) for piece, score in state["model"]["vocab"]]


def train_unigram_tokenizer(texts: Iterable[str], vocab_size: int) -> XLMRobertaTokenizer:
    """An XLM-R tokenizer with a Unigram vocabulary of at most ``vocab_size`` pieces (``<mask>`` included)."""
    raw = Tokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # <mask> goes last, as in xlm-roberta-base
        special_tokens=list(XLMR_SPECIALS),
        unk_token="<unk>",
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    pieces = _canonical(unigram_pieces(raw), len(XLMR_SPECIALS)) + [("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=pieces)


def _canonical(pieces: list[tuple[str, float]], specials: int) -> list[tuple[str, float]]:
    """The trainer's pieces in an order and with scores that do not depend on the run.

    The trainer sums in hash-map order: the same text gives scores that differ in the last bits, tied
    pieces in any order, and the characters no piece covers (appended last, each a little below the
    lowest score) in any order too. In a test 30 of 600 ids moved between two runs and 4% of the lines
    encoded differently. So scores are rounded to 1e-6, those last characters share the lowest score,
    and ties are ordered by the piece; the special tokens stay first.
    """
    body = [(piece, round(score, 6)) for piece, score in pieces[specials:]]
    floor = min((score for piece, score in body if len(piece) > 1), default=None)
    if floor is not None:
        tail = [piece for piece, score in body if len(piece) == 1 and score < floor]
        lowest = min((score for piece, score in body if piece in tail), default=floor)
        body = [(piece, lowest if len(piece) == 1 and score < floor else score) for piece, score in body]
    return pieces[:specials] + sorted(body, key=lambda p: (-p[1], p[0]))


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int) -> BertTokenizer:
    """A cased BERT tokenizer with a WordPiece vocabulary of at most ``vocab_size`` entries."""
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(BERT_SPECIALS), show_progress=False
    )
    raw.train_from_iterator(texts, trainer=trainer)
    vocab = dict(sorted(raw.get_vocab().items(), key=lambda item: item[1]))
    return BertTokenizer(vocab=vocab, do_lower_case=False, strip_accents=False)


def train_tokenizer(family: str, texts: list[str], vocab_size: int):
    """A tokenizer of ``family`` (``xlmr``: Unigram, ``bert``: WordPiece) with exactly ``vocab_size`` tokens.

    Raises:
        UsageError: when the text yields fewer pieces than asked (the size must be exact: the dry run
            sizes the teacher from it).
    """
    kind = family_named(family).tokenizer
    tokenizer = (train_unigram_tokenizer if kind == "unigram" else train_wordpiece_tokenizer)(texts, vocab_size)
    if len(tokenizer) != vocab_size:
        raise UsageError(f"the text yields a {kind} vocabulary of {len(tokenizer):,} tokens, not {vocab_size:,}: "
                         f"ask for at most {len(tokenizer):,} or give more text")
    return tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="text to train on: a file, a folder or hf:org/name")
    parser.add_argument("--family", choices=("xlmr", "bert"), default="xlmr", help="xlmr: Unigram; bert: WordPiece")
    parser.add_argument("--vocab-size", type=int, required=True, help="tokens, special tokens included")
    parser.add_argument("--max-lines", type=int, default=None, help="read at most this many corpus lines")
    parser.add_argument("--out", required=True, help="output directory (a tokenizer AutoTokenizer loads)")


def main(args: argparse.Namespace) -> int:
    from pipeline.config import CorpusSource
    from pipeline.corpus import read_corpus

    texts = read_corpus(CorpusSource(source=args.corpus, max_lines=args.max_lines))
    tokenizer = train_tokenizer(args.family, texts, args.vocab_size)
    tokenizer.save_pretrained(args.out)
    print(json.dumps({"family": args.family, "vocab_size": len(tokenizer), "lines": len(texts), "out": args.out}))
    return 0
