"""The stage commands as a user runs them: exit codes, one-line errors, metrics.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.__main__ import main as cli
from tests.pipeline.helpers import assert_hf_dir

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: 10-30 s on a busy 2-core machine
def test_subprocess_trim_vocab_writes_model_and_metrics(tiny_bert, shared_data, tmp_path):
    done = run("trim-vocab", "--model", str(tiny_bert), "--corpus", str(shared_data / "mt" / "raw" / "test.parsemetsv"),
               "--vocab-size", "100", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["params"] == assert_hf_dir(tmp_path / "o").num_parameters()


def test_subprocess_bad_input_is_one_line_exit_2(tiny_bert, tmp_path):
    done = run("truncate", "--model", str(tiny_bert), "--hidden", "30", "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: hidden size 30 is not divisible by num_attention_heads=4"
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_in_process_bad_input(tiny_xlmr, shared_data, tmp_path, capsys):
    flores = str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn")
    (tmp_path / "empty.txt").write_text("\n\n")
    cases = {
        "model directory not found": ["truncate", "--model", str(tmp_path / "missing"), "--hidden", "16",
                                            "--out", str(tmp_path / "z")],
        "student layers 9 must be between 1 and the teacher's 4": ["distill", "--teacher", str(tiny_xlmr), "--layers", "9",
                                                                   "--corpus", flores, "--out", str(tmp_path / "a"), "--steps", "0"],
        "corpus is empty": ["prune", "--model", str(tiny_xlmr), "--ffn", "8", "--corpus", str(tmp_path / "empty.txt"),
                            "--out", str(tmp_path / "b")],
        "FFN size 99 must be between 1 and the model's 37": ["prune", "--model", str(tiny_xlmr), "--ffn", "99",
                                                             "--corpus", flores, "--out", str(tmp_path / "c")],
        "larger than the model's": ["trim-vocab", "--model", str(tiny_xlmr), "--corpus", flores, "--vocab-size", "999",
                                    "--out", str(tmp_path / "d")],
        "give either --model": ["adapt", "--corpus", flores, "--out", str(tmp_path / "e")],
    }
    for message, args in cases.items():
        assert cli(args) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
