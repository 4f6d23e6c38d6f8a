"""Safe by default: no code from a model folder, weights only as safetensors, YAML only through
``safe_load``, and every server the project starts or prints a command for bound to 127.0.0.1.

Each rule is checked on behaviour (a folder whose code would leave a file behind, a pickled teacher, a
YAML tag that would run a command) and on the source, so that a new loader or server cannot slip past.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch

from pipeline import modeling
from pipeline.config import AdaptConfig, CorpusSource
from pipeline.errors import UsageError
from pipeline.modeldir import check_model_dir
from pipeline.trial import prepare_teacher
from search.spec import SpecError, load_spec
from tests.search.fakes import write_spec

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("pipeline", "search") for p in (REPO / folder).glob("*.py"))
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield node


def _with_code(folder: Path, marker: Path) -> None:
    (folder / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                      "from transformers import XLMRobertaConfig as CustomConfig\n")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "custom.CustomConfig"}}))


# ---------------------------------------------------------------------------- remote code
def test_a_folder_with_its_own_code_is_refused_and_the_code_never_runs(tiny_xlmr, tmp_path):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_xlmr, folder)
    _with_code(folder, tmp_path / "RAN")
    with pytest.raises(UsageError, match="auto_map asks to run the folder's own Python code"):
        modeling.load(folder)
    with pytest.raises(UsageError, match="auto_map"):
        modeling.load_tokenizer(folder) and check_model_dir(folder)
    assert modeling.load_config(folder)["model_type"] == "xlm-roberta"  # the stock config class, no code
    assert not (tmp_path / "RAN").exists()


def test_trust_remote_code_is_a_spec_opt_in_with_a_warning(tmp_path, caplog):
    spec_path = write_spec(tmp_path)
    _with_code(tmp_path / "teacher", tmp_path / "RAN")
    with pytest.raises(SpecError, match="teacher.model: .*auto_map asks to run .*teacher.trust_remote_code: true"):
        load_spec(spec_path)
    with caplog.at_level(logging.WARNING):
        spec = load_spec(spec_path, ["teacher.trust_remote_code=true"])
    assert spec.teacher.trust_remote_code
    assert "teacher.trust_remote_code is true" in caplog.text and "runs Python code" in caplog.text
    assert not (tmp_path / "RAN").exists()  # checking the spec reads the config only


def test_every_from_pretrained_call_says_whether_code_may_run():
    """trust_remote_code=None would prompt or follow the library's default: every call decides."""
    missing = []
    for path in SOURCES:
        for node in calls(path):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                keywords = {k.arg for k in node.keywords}
                spread = [k.value for k in node.keywords if k.arg is None]
                safe = any(isinstance(v, ast.Call) and getattr(v.func, "id", getattr(v.func, "attr", "")) == "safe_kwargs"
                           for v in spread)
                if "trust_remote_code" not in keywords and not safe:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno}")
                model_class = getattr(node.func.value, "id", "")
                if model_class.startswith("AutoModel") and "use_safetensors" not in keywords and not safe:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno} (use_safetensors)")
    assert missing == []
    assert modeling.safe_kwargs() == {"trust_remote_code": False, "use_safetensors": True}


# ---------------------------------------------------------------------------- safetensors only
def _pickled_copy(tiny_xlmr: Path, folder: Path) -> None:
    model, _ = modeling.load(tiny_xlmr)
    shutil.copytree(tiny_xlmr, folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")


def test_pickled_weights_are_refused_unless_allowed_then_imported_as_safetensors(tiny_xlmr, tmp_path):
    folder = tmp_path / "pickled"
    _pickled_copy(tiny_xlmr, folder)
    with pytest.raises(UsageError, match="holds only pickled weights"):
        modeling.load(folder)
    corpus = CorpusSource(source=str(tmp_path / "none.txt"))
    imported = Path(prepare_teacher(str(folder), AdaptConfig(enabled=False), corpus, corpus, str(tmp_path / "cache"),
                                    allow_pickle=True))
    assert imported.parent == tmp_path / "cache" and (imported / "model.safetensors").is_file()
    assert not [p for p in imported.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    original, tokenizer = modeling.load(tiny_xlmr)
    copy, _ = modeling.load(imported)  # the safe defaults load the copy
    ids = tokenizer(["Il-Ħamis li għadda"], return_tensors="pt")
    original.eval(), copy.eval()
    assert torch.equal(original(**ids).logits, copy(**ids).logits)


def test_a_pickled_teacher_in_a_spec_needs_allow_pickle(tmp_path):
    spec_path = write_spec(tmp_path)
    (tmp_path / "teacher" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(SpecError, match="holds only pickled weights .*teacher.allow_pickle: true"):
        load_spec(spec_path)
    assert load_spec(spec_path, ["teacher.allow_pickle=true"]).teacher.allow_pickle


def test_outputs_are_safetensors_only(tiny_bert, shared_data, tmp_path):
    from pipeline.__main__ import main as cli

    out = tmp_path / "out"
    assert cli(["prune", "--model", str(tiny_bert), "--ffn", "20", "--corpus",
                str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn"), "--max-batches", "2",
                "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file()
    assert not [p for p in out.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
    writers = [f"{p.relative_to(REPO)}:{n.lineno}" for p in SOURCES for n in calls(p)
               if isinstance(n.func, ast.Attribute) and n.func.attr in ("save", "load")
               and getattr(n.func.value, "id", "") in ("torch", "pickle")]
    assert writers == [], "weights are written and read through safetensors only"


# ---------------------------------------------------------------------------- YAML
def test_yaml_is_read_only_with_safe_load(tmp_path):
    unsafe = []
    for path in SOURCES + sorted((REPO / "tests").rglob("*.py")):
        for node in calls(path):
            if isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "yaml" \
                    and node.func.attr in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
                unsafe.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert unsafe == []
    spec_path = write_spec(tmp_path)
    spec_path.write_text(spec_path.read_text() + f"\nlanguage: !!python/object/apply:os.system ['touch {tmp_path / 'RAN'}']\n")
    with pytest.raises(SpecError, match="could not determine a constructor"):
        load_spec(spec_path)
    assert not (tmp_path / "RAN").exists()


# ---------------------------------------------------------------------------- servers on 127.0.0.1
def test_servers_listen_on_127_0_0_1_by_default(monkeypatch):
    import ray

    from search import tuner
    from search.tracking import ui_command

    assert "--host 127.0.0.1 " in ui_command("sqlite:////tmp/x/mlflow.db") + " "
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    tuner.start_ray("local")
    assert seen["include_dashboard"] is False  # the private Ray starts no dashboard at all
    readme = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text(encoding="utf-8"))  # join continued lines
    commands = [line for line in readme.splitlines() if re.search(r"(mlflow ui|ray start --head)\b", line)]
    assert len(commands) >= 2, "the README's server commands"
    for line in commands:
        assert re.search(r"--(dashboard-)?host[ =]127\.0\.0\.1\b", line), line
    for path in SOURCES + [REPO / "README.md"]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert "0.0.0.0" not in line or "opens it to the network" in line, f"{path.name}:{number}: {line}"
