"""The teacher's config.json: local directories, synthetic teachers, the hub cache, the built-in table."""

from __future__ import annotations

import sys
import types

import pytest

from search import teachers
from search.spec import SpecError, load_spec
from search.spec import teacher_config
from search.teachers import BUILTIN_TEACHER_CONFIGS
from tests.search.test_spec import MBERT, XLMR_BASE, minimal, problems, write_spec, write_teacher


def test_teacher_config_from_a_local_dir(tmp_path):
    folder = write_teacher(tmp_path / "t", MBERT)
    assert teacher_config(str(folder)) == MBERT
    assert teacher_config(str(folder / "config.json")) == MBERT


def test_unreadable_local_teachers(tmp_path):
    (tmp_path / "empty").mkdir()
    write_teacher(tmp_path / "gpt", {**MBERT, "model_type": "gpt2"})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{nope")
    cases = {
        "missing": "no such directory",
        "empty": "no config.json in this directory",
        "gpt": "model_type 'gpt2' is not supported",
        "broken": "not valid JSON",
    }
    for name, message in cases.items():
        with pytest.raises(SpecError) as info:
            teacher_config(str(tmp_path / name))
        assert str(info.value).startswith(f"teacher.model: {tmp_path / name}: ")
        assert message in str(info.value)
    path = write_spec(tmp_path / "s", minimal(teacher={"model": "./nowhere"}), teacher=None)
    assert problems(path) == [f"{path}: teacher.model: {tmp_path / 's' / 'nowhere'}: no such directory"]


def test_synthetic_teacher_reads_pipeline_synthetic(tmp_path, monkeypatch):
    fake = types.ModuleType("pipeline.synthetic")
    calls = []
    fake.teacher_config = lambda name="demo": calls.append(name) or {**XLMR_BASE, "hidden_size": 64, "num_attention_heads": 4}
    monkeypatch.setitem(sys.modules, "pipeline.synthetic", fake)
    spec = load_spec(write_spec(tmp_path, minimal(teacher={"model": "synthetic:demo/teacher"}, space={"hidden": [32, 64]}), teacher=None))
    assert teacher_config(spec)["hidden_size"] == 64 and calls == ["demo"]  # read when loading, then carried
    with pytest.raises(SpecError, match="synthetic:NAME/teacher"):
        teacher_config("synthetic:demo/pos")


def test_synthetic_teacher_without_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pipeline.synthetic", None)
    with pytest.raises(SpecError, match="teacher.model: synthetic:demo/teacher: synthetic teachers need pipeline.synthetic"):
        teacher_config("synthetic:demo/teacher")


def test_hub_teacher_offline_uses_the_builtin_table(caplog):
    config = teacher_config("FacebookAI/xlm-roberta-base")
    assert config == BUILTIN_TEACHER_CONFIGS["FacebookAI/xlm-roberta-base"]
    notices = [r.getMessage() for r in caplog.records if r.name == "search.teachers"]
    assert len(notices) == 1 and "built-in config.json" in notices[0] and "\n" not in notices[0]
    assert "HF_HUB_OFFLINE is set" in notices[0]


def test_hub_teacher_unreachable_does_not_wait(monkeypatch, caplog):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(teachers, "_hub_reachable", lambda endpoint: False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: pytest.fail("no download when unreachable"))
    assert teacher_config("bert-base-multilingual-cased")["vocab_size"] == 119547
    assert "the hub cannot be reached" in caplog.text


def test_hub_teacher_from_the_local_cache(tmp_path, monkeypatch):
    config = write_teacher(tmp_path / "snap", {**MBERT, "num_hidden_layers": 6}) / "config.json"
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo_id, filename: str(config))
    assert teacher_config("someone/their-bert")["num_hidden_layers"] == 6


def test_unknown_hub_teacher_offline_is_an_error(tmp_path):
    with pytest.raises(SpecError) as info:
        teacher_config("someone/unknown-model")
    assert str(info.value) == (
        "teacher.model: someone/unknown-model: config.json is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    )
    with pytest.raises(SpecError, match="neither a local directory nor a Hugging Face model id"):
        teacher_config("not a model id")


def test_builtin_table_covers_the_papers_teachers():
    for name in ("FacebookAI/xlm-roberta-base", "xlm-roberta-base", "google-bert/bert-base-multilingual-cased",
                 "bert-base-multilingual-cased"):
        config = BUILTIN_TEACHER_CONFIGS[name]
        reference = XLMR_BASE if config["model_type"] == "xlm-roberta" else MBERT
        assert {key: config[key] for key in reference} == reference
