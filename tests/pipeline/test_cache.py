"""The stage cache: stable keys, reuse, atomic builds, one build for two processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.cache import cached, is_complete, stage_key
from pipeline.config import DistillConfig

REPO = Path(__file__).resolve().parents[2]


def test_stage_key_is_stable_and_sensitive():
    a = stage_key("in", "distill", {"cfg": DistillConfig(), "layers": 6})
    assert a == stage_key("in", "distill", {"layers": 6, "cfg": DistillConfig()})
    assert a.startswith("distill-")
    assert a != stage_key("in", "distill", {"cfg": DistillConfig(lr=1e-4), "layers": 6})
    assert a != stage_key("other", "distill", {"cfg": DistillConfig(), "layers": 6})


def test_cached_builds_once_and_cleans_failures(tmp_path):
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "x.txt").write_text("done")

    first = cached(tmp_path, "k", build)
    assert cached(tmp_path, "k", build) == first and len(calls) == 1
    assert (first / "x.txt").read_text() == "done" and is_complete(first)

    def broken(out: Path) -> None:
        (out / "partial").write_text("")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cached(tmp_path, "bad", broken)
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_two_processes_compute_once(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from pipeline.cache import cached
        def build(out):
            with open({str(tmp_path / 'calls.log')!r}, "a") as log:
                log.write("built\\n")
            time.sleep(1.0)
            (out / "value").write_text("42")
        print(cached({str(tmp_path / 'cache')!r}, "shared", build))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs[0] == outputs[1] == str(tmp_path / "cache" / "shared")
    assert (tmp_path / "calls.log").read_text().count("built") == 1
