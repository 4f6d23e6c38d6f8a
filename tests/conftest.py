"""Shared fixtures: tiny teachers of both families built in-process, and the real data beside the checkout.

Nothing here downloads: tokenizers are trained on a few thousand Maltese sentences from
``../shared/data`` (or ``$LRL_SHARED_DATA``) and models are built from tiny configs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data_dir() -> Path:
    path = Path(os.environ.get("LRL_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    if not (path / "mt").is_dir():
        raise RuntimeError(f"real test data not found at {path}: set LRL_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def maltese_sentences(shared_data: Path) -> list[str]:
    """About 2,000 real Maltese sentences (PARSEME news text)."""
    from pipeline.corpus import read_parseme

    return read_parseme(shared_data / "mt" / "raw" / "train.parsemetsv")[:2000]


def build_tiny_model(family: str, texts: list[str], out: Path, *, layers: int = 4, vocab_size: int = 300) -> Path:
    """Save a tiny random ``...ForMaskedLM`` (hidden 32, 4 heads, FFN 37) with a tokenizer trained on ``texts``."""
    import torch
    from transformers import AutoModelForMaskedLM, BertConfig, XLMRobertaConfig

    from pipeline.vocab import train_unigram_tokenizer, train_wordpiece_tokenizer

    torch.manual_seed(0)
    if family == "xlmr":
        tokenizer = train_unigram_tokenizer(texts, vocab_size)
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=66, type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2,
        )
    else:
        tokenizer = train_wordpiece_tokenizer(texts, vocab_size)
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        )
    model = AutoModelForMaskedLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def local_spec(path: Path, teacher, corpus, heldout, tasks: dict[str, str], vocab: str = "full") -> Path:
    """A spec over local files with a tiny teacher and one small candidate, written to ``path``."""
    lines = "\n".join(f"    {name}: {{source: '{source}'}}" for name, source in tasks.items())
    path.write_text(f"""language: mt
teacher: {{model: '{teacher}'}}
data:
  corpus: {{source: '{corpus}'}}
  heldout: {{source: '{heldout}'}}
  tasks:
{lines}
space: {{layers: [2], ffn: [16], hidden: [16], vocab: [{vocab}]}}
""")
    return path


@pytest.fixture(scope="session")
def tiny_xlmr(tmp_path_factory, maltese_sentences) -> Path:
    """A 4-layer XLM-R-architecture masked LM with a Unigram tokenizer, as a Hugging Face directory."""
    return build_tiny_model("xlmr", maltese_sentences, tmp_path_factory.mktemp("tiny-xlmr"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, maltese_sentences) -> Path:
    """A 4-layer BERT-architecture masked LM with a WordPiece tokenizer, as a Hugging Face directory."""
    return build_tiny_model("bert", maltese_sentences, tmp_path_factory.mktemp("tiny-bert"))
