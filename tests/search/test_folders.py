"""The search's folders: created and proved writable, marker files for the node check, the one line that
names what a node does not share, and defaults that never point into a Ray job's unpacked package."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.errors import UsageError
from search import folders
from search import schema as schema_module
from search.schema import default_home
from search.spec import load_spec
from tests.search.fakes import write_spec


def test_folders_are_created_and_probed(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    shared = folders.search_folders(spec)
    assert shared == {"search.storage_path": str(tmp_path / "ray"), "search.cache_dir": str(tmp_path / "cache")}
    folders.check_writable(shared)
    assert all(Path(folder).is_dir() and not list(Path(folder).iterdir()) for folder in shared.values())
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=f"search.cache_dir: {tmp_path / 'file'} is a file, not a folder"):
        folders.writable_folder(tmp_path / "file", "search.cache_dir")
    assert folders.input_paths(spec) == {"teacher.model": str(tmp_path / "teacher"),
                                         "data.corpus.source": str(tmp_path / "corpus.txt"),
                                         "data.heldout.source": str(tmp_path / "heldout.txt"),
                                         "data.tasks.pos.source": str(tmp_path / "pos"),
                                         "data.tasks.topic.source": str(tmp_path / "topic")}


def test_a_teacher_built_from_scratch_has_no_folder_to_check(tmp_path):
    path = write_spec(tmp_path)
    path.write_text(path.read_text().replace(f"model: {tmp_path / 'teacher'}", "build: {vocab_size: 100}")
                    .replace("adapt: {enabled: false}", "adapt: {steps: 2}"))
    spec = load_spec(path, check_teacher=False)
    assert spec.teacher.model is None
    assert set(folders.search_folders(spec)) == {"search.storage_path", "search.cache_dir"}
    assert "teacher.model" not in folders.input_paths(spec)
    assert folders.input_paths(spec)["data.corpus.source"] == str(tmp_path / "corpus.txt")


def test_markers_and_the_line_for_a_node_that_does_not_share(tmp_path):
    shared = {"search.storage_path": str(tmp_path / "ray"), "search.cache_dir": str(tmp_path / "stages")}
    folders.check_writable(shared)
    markers = folders.write_markers(shared)
    assert all(Path(m).read_text() == Path(m).name.removeprefix(folders.MARKER_PREFIX) for m in markers.values())
    assert len({Path(m).name for m in markers.values()}) == 1  # one fresh token per check
    folders.remove_markers(markers)
    assert not any(Path(m).exists() for m in markers.values())
    line = folders.unshared_message("w1 (10.0.0.2 ab12)", shared, ["search.cache_dir"], ["data.tasks.pos.source"],
                                    {"data.tasks.pos.source": "/data/pos"})
    assert line == (f"search.cache_dir ({tmp_path / 'stages'}): not the driver's folder on node w1 (10.0.0.2 ab12); "
                    "set it to a folder every node sees, e.g. --set search.cache_dir=/shared/lrl/stages; "
                    "data.tasks.pos.source (/data/pos): not found on node w1 (10.0.0.2 ab12); put it on storage "
                    "every node sees")
    assert "\n" not in line


def test_defaults_leave_a_ray_job_package(tmp_path, monkeypatch):
    package = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    assert default_home(package) == Path("~/.lrl-compress").expanduser()
    assert default_home(tmp_path / "checkout") == tmp_path / "checkout"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LRL_SYNTHETIC_ROOT", raising=False)
    monkeypatch.setattr(schema_module, "REPO_ROOT", package)
    spec_path = write_spec(tmp_path)
    spec_path.write_text("\n".join(line for line in spec_path.read_text().splitlines()
                                   if not line.strip().startswith(("storage_path", "cache_dir", "tracking_uri"))))
    spec = load_spec(spec_path)
    home = tmp_path / "home" / ".lrl-compress"
    assert spec.search.storage_path == str(home / ".cache" / "ray")
    assert spec.search.cache_dir == str(home / ".cache" / "stages")
    assert spec.search.synthetic_dir == str(home / ".cache" / "synthetic")
    assert spec.mlflow.tracking_uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


def _unpack_again(package: Path) -> None:
    """What a runtime-env agent does to a package it has not set up yet: delete the folder, unpack anew."""
    shutil.rmtree(package)
    package.mkdir()
    (package / "marker.py").write_text("x = 1\n")


def test_the_driver_leaves_a_ray_package_that_another_node_unpacks_again(tmp_path, monkeypatch):
    """The README's ray job recipe on two nodes that share a temp folder: the node check's task on the
    second node unpacks the job's package again where the driver runs. Left in it, the driver's next
    os.getcwd() (transformers calls it on import) raises FileNotFoundError; having left it, it does not."""
    package = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    package.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(package)
    _unpack_again(package)
    with pytest.raises(FileNotFoundError):
        os.getcwd()  # the failure the recipe met in prepare()
    monkeypatch.chdir(package)
    moved = folders.leave_ray_package()
    assert moved == tmp_path / "home" / ".lrl-compress" and Path(os.getcwd()) == moved
    _unpack_again(package)
    assert Path(os.getcwd()) == moved
    monkeypatch.chdir(tmp_path)
    assert folders.leave_ray_package() is None and Path(os.getcwd()) == tmp_path  # elsewhere: stays


def test_a_worker_in_a_package_unpacked_again_enters_the_new_copy(tmp_path, monkeypatch):
    package = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    package.mkdir(parents=True)
    monkeypatch.chdir(package)
    monkeypatch.setenv("PWD", str(package))  # as the worker's shell set it (cd DIR && ...)
    _unpack_again(package)
    assert folders.steady_working_dir() == package and (Path(os.getcwd()) / "marker.py").is_file()
