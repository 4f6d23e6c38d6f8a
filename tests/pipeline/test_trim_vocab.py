"""Vocabulary trimming: exact logits for covered text, coherent special ids, both tokenizer kinds."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from pipeline import modeling
from pipeline.__main__ import main as cli
from pipeline.config import TrimVocabConfig
from pipeline.errors import UsageError
from pipeline.trim_vocab import trim_vocab
from tests.pipeline.helpers import assert_hf_dir


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
@pytest.mark.parametrize("counting", ["frequency", "document"])
def test_kept_token_logits_unchanged(fixture, counting, request, maltese_sentences, tmp_path):
    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    model.eval()
    new, new_tokenizer, metrics = trim_vocab(model, tokenizer, maltese_sentences[:300], 120, TrimVocabConfig(counting=counting))
    assert metrics["vocab_size"] == len(new_tokenizer) == new.config.vocab_size <= 120
    assert 0.5 < metrics["coverage"] < 1
    old_vocab, new_vocab = tokenizer.get_vocab(), new_tokenizer.get_vocab()
    old_of_new = torch.tensor([old_vocab[token] for token, _ in sorted(new_vocab.items(), key=lambda item: item[1])])
    # short phrases all of whose pieces were kept
    phrases = [" ".join(s.split()[:3]) for s in maltese_sentences[:300]]
    covered = [s for s in phrases if all(i in set(old_of_new.tolist()) for i in tokenizer(s)["input_ids"])]
    assert len(covered) >= 4
    old_batch = tokenizer(covered[:4], padding=True, return_tensors="pt")
    new_batch = new_tokenizer(covered[:4], padding=True, return_tensors="pt")
    assert torch.equal(old_of_new[new_batch["input_ids"]], old_batch["input_ids"])
    new.eval()
    old_logits = model(**old_batch).logits[..., old_of_new]
    torch.testing.assert_close(new(**new_batch).logits, old_logits, rtol=1e-5, atol=1e-5)
    for name in ("pad", "unk", "mask", "cls", "sep"):
        token = getattr(tokenizer, f"{name}_token")
        assert new_tokenizer.convert_tokens_to_ids(token) == getattr(new_tokenizer, f"{name}_token_id")
    assert new.config.pad_token_id == new_tokenizer.pad_token_id
    modeling.save(new, new_tokenizer, tmp_path / "out")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert loaded(covered[0])["input_ids"] == new_tokenizer(covered[0])["input_ids"]
    assert_hf_dir(tmp_path / "out")


def test_uncovered_text_uses_only_kept_pieces(tiny_xlmr, maltese_sentences):
    model, tokenizer = modeling.load(tiny_xlmr)
    _, new_tokenizer, _ = trim_vocab(model, tokenizer, maltese_sentences[:50], 60, TrimVocabConfig(min_count=1))
    ids = new_tokenizer(maltese_sentences[500:520])["input_ids"]
    assert max(max(row) for row in ids) < len(new_tokenizer)


def test_min_count_limits_size(tiny_bert, maltese_sentences):
    model, tokenizer = modeling.load(tiny_bert)
    _, _, metrics = trim_vocab(model, tokenizer, maltese_sentences[:3], 290, TrimVocabConfig(min_count=5))
    assert metrics["vocab_size"] < 100


def test_bad_sizes(tiny_bert, maltese_sentences):
    model, tokenizer = modeling.load(tiny_bert)
    with pytest.raises(UsageError, match="larger than the model's"):
        trim_vocab(model, tokenizer, maltese_sentences[:10], 10_000, TrimVocabConfig())
    with pytest.raises(UsageError, match="no room beside 5 special tokens"):
        trim_vocab(model, tokenizer, maltese_sentences[:10], 5, TrimVocabConfig())


def test_trim_vocab_cli(tiny_xlmr, shared_data, tmp_path):
    out = tmp_path / "o"
    args = ["trim-vocab", "--model", str(tiny_xlmr), "--corpus", str(shared_data / "mt" / "raw" / "test.parsemetsv"),
            "--vocab-size", "150", "--out", str(out), "--min-count", "1"]
    assert cli(args) == 0
    assert json.loads((out / "metrics.json").read_text())["vocab_size"] == 150
    assert assert_hf_dir(out).config.vocab_size == 150


def _with_added_tokens(family: str, folder, tmp_path):
    """The tiny model of ``family`` with tokens added on top of its segmentation model, saved: ``add_tokens``
    (plain and special), and for XLM-R a ``<mask>`` outside the Unigram vocabulary (a layout that
    ``AutoTokenizer`` loads and that made trim-vocab fail with an IndexError)."""
    from transformers import XLMRobertaTokenizer

    from pipeline.vocab import unigram_pieces

    model, tokenizer = modeling.load(folder)
    if family == "xlmr":
        tokenizer = XLMRobertaTokenizer(vocab=unigram_pieces(tokenizer)[:-1])
        assert tokenizer.mask_token_id == len(unigram_pieces(tokenizer))  # added, not a Unigram piece
    tokenizer.add_tokens(["Malta", "ħello"])
    tokenizer.add_special_tokens({"extra_special_tokens": ["[X]"]}, replace_extra_special_tokens=False)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    out = tmp_path / f"{family}-added"
    modeling.save(model, tokenizer, out)
    return out


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_added_tokens_survive_reindexed_with_exact_logits(fixture, request, maltese_sentences, tmp_path, capsys):
    family = fixture.removeprefix("tiny_")
    source = _with_added_tokens(family, request.getfixturevalue(fixture), tmp_path)
    out = tmp_path / "trimmed"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(maltese_sentences[:300]), encoding="utf-8")
    assert cli(["trim-vocab", "--model", str(source), "--corpus", str(corpus), "--vocab-size", "120",
                "--out", str(out)]) == 0, capsys.readouterr().err
    model, tokenizer = modeling.load(source)
    new, new_tokenizer = modeling.load(out)
    assert len(new_tokenizer) == new.config.vocab_size == 120
    added = ["Malta", "ħello", "[X]"] + (["<mask>"] if family == "xlmr" else [])
    new_vocab = new_tokenizer.get_vocab()
    assert all(token in new_vocab for token in added)
    assert new_tokenizer.extra_special_tokens == ["[X]"] and new_tokenizer.mask_token == tokenizer.mask_token
    assert new_tokenizer.convert_tokens_to_ids(new_tokenizer.mask_token) == new_tokenizer.mask_token_id
    old_vocab = tokenizer.get_vocab()
    old_of_new = torch.tensor([old_vocab[token] for token, _ in sorted(new_vocab.items(), key=lambda item: item[1])])
    text = [f"Malta [X] ħello {new_tokenizer.mask_token} l-", "ħello Malta"]
    old_batch = tokenizer(text, padding=True, return_tensors="pt")
    new_batch = new_tokenizer(text, padding=True, return_tensors="pt")
    assert torch.equal(old_of_new[new_batch["input_ids"]], old_batch["input_ids"])
    model.eval(), new.eval()
    torch.testing.assert_close(new(**new_batch).logits, model(**old_batch).logits[..., old_of_new], rtol=1e-5, atol=1e-5)
    assert_hf_dir(out)


def test_counts_are_remembered_per_tokenizer_and_corpus(tiny_xlmr, tiny_bert, maltese_sentences):
    from pipeline import trim_vocab as module

    xlmr, bert = modeling.load_tokenizer(tiny_xlmr), modeling.load_tokenizer(tiny_bert)
    texts = maltese_sentences[:300]
    module._COUNTS.clear()
    first = module.count_pieces(xlmr, texts)
    assert module.count_pieces(xlmr, list(texts)) == first and len(module._COUNTS) == 1
    first[0] = -1  # the caller's copy: changing it changes nothing remembered
    assert module.count_pieces(xlmr, texts)[0] != -1
    module.count_pieces(xlmr, texts[:-1])
    module.count_pieces(bert, texts)
    module.count_pieces(xlmr, texts, "document")
    assert len(module._COUNTS) == 4


def test_a_vocabulary_smaller_than_asked_is_said(tiny_xlmr, maltese_sentences, caplog):
    """Too little text for the size asked: the pieces reaching min_count are kept, and the metrics, the
    log and the note say how many of how many, and why."""
    import logging

    model, tokenizer = modeling.load(tiny_xlmr)
    texts = maltese_sentences[:20]
    cfg = TrimVocabConfig(min_count=2)
    from pipeline.trim_vocab import count_pieces, kept_specials

    specials = set(kept_specials(tokenizer))
    reaching = sum(1 for i, c in count_pieces(tokenizer, texts).items() if c >= 2 and i not in specials)
    with caplog.at_level(logging.WARNING, logger="pipeline.trim_vocab"):
        new, _, metrics = trim_vocab(model, tokenizer, texts, 250, cfg)
    assert reaching + len(specials) < 250 and metrics["vocab_size"] == reaching + len(specials) == new.config.vocab_size
    assert metrics["vocab_size_asked"] == 250 and metrics["pieces_at_min_count"] == reaching
    note = (f"kept {reaching + len(specials)} of the 250 tokens asked: only {reaching} pieces occur at least 2 times "
            "(trim_vocab.min_count) in the 20 corpus lines")
    assert metrics["note"] == note
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [f"trim-vocab: {note}"]
    _, _, full = trim_vocab(model, tokenizer, maltese_sentences[:300], 120, cfg)  # enough text: nothing to say
    assert full["vocab_size"] == 120 and "note" not in full


def test_the_note_reaches_the_trial_result_and_the_card(tiny_xlmr, shared_data, tmp_path):
    from pipeline.card import card_data, model_card
    from pipeline.config import Candidate, CorpusSource, DistillConfig
    from pipeline.plan import TrialPlan
    from pipeline.trial import build_student

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Il-kelb.\nIl-qattus.\nIl-kelb u l-qattus.\n", encoding="utf-8")
    plan = TrialPlan(teacher=str(tiny_xlmr), candidate=Candidate(4, 37, 32, 200),
                     order=("distill", "prune", "truncate", "trim_vocab"), corpus=CorpusSource(str(corpus)),
                     heldout=CorpusSource(str(corpus)), distill=DistillConfig(steps=0), cache_dir=str(tmp_path / "c"))
    messages = []
    result = build_student(plan, messages.append)
    kept = result["stages"]["trim_vocab"]["vocab_size"]
    assert kept < 200 and result["stages"]["trim_vocab"]["vocab_size_asked"] == 200
    (note,) = result["notes"]
    assert note.startswith(f"trim_vocab: kept {kept} of the 200 tokens asked: only ") and note.endswith(" in the 3 corpus lines")
    assert note in messages
    card = model_card(card_data(result, name="small"))
    assert f"Note: {note}." in card and f"vocab_size={kept}, vocab_size_asked=200" in card
