"""benchmarks/real_size.py: its tiny setting end to end, and the real teachers' exact vocabularies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sizes import config_parameters

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_setting_runs_every_stage_through_the_commands(tmp_path, shared_data):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "LRL_SHARED_DATA": str(shared_data)}
    out = tmp_path / "real-size-tiny.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "real_size.py"), "--tiny", "--work",
                           str(tmp_path / "work"), "--out", str(out), "--estimate-lengths", "64"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"command", "commit", "dirty", "machine", "date"} <= set(result)
    assert "--tiny" in result["command"] and result["settings"]["lengths"] == [32]
    assert result["settings"]["batches"] == {"adapt": 32, "distill": 8, "prune": 8, "truncate": 8, "evaluate": 64}
    (family,) = result["families"].values()
    teacher = json.loads((Path(family["teacher"]) / "config.json").read_text())
    assert family["params"] == config_parameters(teacher) and family["vocab_size"] == 2_000
    rows = {row["stage"]: row for row in family["stages"] if not row.get("estimate_only")}
    estimated = [row for row in family["stages"] if row.get("estimate_only")]
    assert [row["stage"] for row in estimated] == list(rows) and {row["length"] for row in estimated} == {64}
    assert all(row["fits"] and row["estimate_bytes"] >= rows[row["stage"]]["estimate_bytes"] for row in estimated)
    assert estimated[0]["estimate_bytes"] > rows["adapt"]["estimate_bytes"]
    assert list(rows) == ["adapt", "distill", "prune", "truncate", "truncate.distill", "trim_vocab", "evaluate"]
    shapes = {"adapt": {}, "distill": {"num_hidden_layers": 2}, "prune": {"num_hidden_layers": 2, "intermediate_size": 64}}
    shapes["truncate"] = shapes["truncate.distill"] = {**shapes["prune"], "hidden_size": 32}
    shapes["trim_vocab"] = shapes["evaluate"] = {**shapes["truncate"], "vocab_size": 800}
    for stage, row in rows.items():
        assert row["params"] == config_parameters({**teacher, **shapes[stage]}), stage
        assert row["run_length"] == 32 and row["peak_rss_bytes"] > 0 and row["estimate_bytes"] > 0, stage
        assert row["estimate_bytes"] == sum(row["estimate"].values())
        # on Linux a command's peak starts at its starter's (here pytest's), so the peak never reads below it
        assert 0 < row["floor_rss_bytes"] <= row["peak_rss_bytes"], stage
        if stage not in ("truncate", "trim_vocab"):
            assert row["steps"] == 3 and row["seconds_per_step"] > 0, stage
    assert rows["adapt"]["batch"] == 32 and rows["evaluate"]["batch"] == 64
    assert "| xlmr | truncate.distill | 32 | 8 |" in proc.stdout and "| xlmr | adapt | 64 | 32 | not run |" in proc.stdout


@pytest.mark.slow
def test_the_real_teachers_tokenizers_have_their_exact_sizes(shared_data):
    """What the real-size setting builds its teachers with: 250,002 Unigram ids (XLM-R base) and 119,547
    WordPiece ids (mBERT), trained on Maltese and completed; the configs count the real parameters."""
    sys.path.insert(0, str(REPO))
    from benchmarks.real_size import FAMILIES, Settings, _maltese, exact_tokenizer, teacher_config

    texts = _maltese(shared_data)["train"]
    settings = Settings(tiny=False, steps=3, lengths=(128, 512), device="cpu", device_memory=24 * 2**30, batches={})
    for family, (_, vocab, params) in FAMILIES.items():
        tokenizer = exact_tokenizer(family, texts, vocab)
        config, counted = teacher_config(family, settings)
        assert len(tokenizer) == config["vocab_size"] == vocab and counted == params == config_parameters(config)
        assert tokenizer.convert_ids_to_tokens(tokenizer.mask_token_id) == tokenizer.mask_token
        assert "ħabbar" in "".join(tokenizer.tokenize("Il-Gvern ħabbar miżuri ġodda."))
    assert FAMILIES["xlmr"][2] == 278_295_186 and FAMILIES["bert"][2] == 177_974_523


def test_an_earlier_checkout_runs_without_the_options_its_commands_lack(tmp_path):
    """--pipeline DIR: each command keeps the options DIR's command has, and lists the ones left out."""
    sys.path.insert(0, str(REPO))
    from benchmarks import real_size

    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__main__.py").write_text(
        "import argparse\nparser = argparse.ArgumentParser()\nsub = parser.add_subparsers()\n"
        "distill = sub.add_parser('distill')\nfor option in ('--teacher', '--steps', '--out'):\n"
        "    distill.add_argument(option)\nparser.parse_args()\n")
    argv = [sys.executable, "-m", "pipeline", "distill", "--teacher", "/t", "--heldout-rows", "8", "--steps", "3",
            "--max-length", "128", "--out", "/o"]
    kept, dropped = real_size._supported(argv, tmp_path)
    assert kept == [sys.executable, "-m", "pipeline", "distill", "--teacher", "/t", "--steps", "3", "--out", "/o"]
    assert dropped == ["--heldout-rows 8", "--max-length 128"]
    assert real_size._supported(argv, real_size.REPO) == (argv, [])


def test_compare_prints_each_stage_peak_before_and_after():
    sys.path.insert(0, str(REPO))
    from benchmarks.real_size import _compare

    def run(commit, peaks, dropped=()):
        rows = [{"stage": stage, "length": 128, "run_length": 128, "peak_rss_bytes": peak * 2**30,
                 "peak_cuda_bytes": None, **({"dropped": list(dropped)} if dropped else {})}
                for stage, peak in peaks.items()]
        return {"commit": commit, "settings": {"pipeline_commit": None}, "families": {"xlmr": {"stages": rows}}}

    before = run("a" * 40, {"adapt": 8.0, "distill": 10.0}, ["--heldout-rows 8"])
    before["settings"]["pipeline_commit"] = "b" * 40
    text = _compare(before, run("c" * 40, {"adapt": 6.0, "distill": 10.0, "prune": 3.0}))
    assert text.splitlines()[0] == "before: bbbbbbbbbb, after: cccccccccc"
    assert "| xlmr | adapt | 128 | 8.00 | 6.00 | 0.75 |  |  | --heldout-rows 8 |" in text
    assert "| xlmr | distill | 128 | 10.00 | 10.00 | 1.00 |" in text and "prune" not in text
