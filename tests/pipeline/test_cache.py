"""The stage cache: stable keys, reuse, atomic builds, one build for two processes."""

from __future__ import annotations

import json
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


def test_a_build_killed_half_way_is_built_again_and_its_leftovers_removed(tmp_path):
    """SIGKILL a process in the middle of a build: nobody sees the half-written entry, the next caller
    builds it once and removes the killed build's private folder."""
    import os
    import signal
    import time

    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pipeline.cache import cached
        def build(out):
            (out / "half").write_text("written before the kill")
            print("building", flush=True)
            time.sleep(60)
        cached({str(tmp_path / 'cache')!r}, "k", build)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "building"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]
    assert leftovers == [f".k.tmp-{proc.pid}"] and not is_complete(tmp_path / "cache" / "k")
    calls = []
    started = time.time()
    path = cached(tmp_path / "cache", "k", lambda out: calls.append(out) or (out / "value").write_text("42"))
    assert time.time() - started < 10  # the dead process's lock did not hold us
    assert calls and (path / "value").read_text() == "42" and not (path / "half").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name] == []


def test_a_damaged_entry_is_rebuilt_with_a_warning(tmp_path, caplog):
    def build(out: Path) -> None:
        (out / "metrics.json").write_text('{"params": 1}')

    def verify(path: Path):
        try:
            json.loads((path / "metrics.json").read_text())
        except ValueError as error:
            return f"metrics.json: {error}"
        return None

    first = cached(tmp_path, "k", build, verify=verify)
    (first / "metrics.json").write_text('{"params": ')  # damaged after it was complete
    calls = []
    again = cached(tmp_path, "k", lambda out: calls.append(1) or build(out), verify=verify)
    assert again == first and calls == [1] and json.loads((again / "metrics.json").read_text()) == {"params": 1}
    assert any("is damaged" in r.message and "metrics.json" in r.message for r in caplog.records)
    assert cached(tmp_path, "k", lambda out: calls.append(2), verify=verify) == first and calls == [1]
