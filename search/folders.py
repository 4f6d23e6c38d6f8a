"""The search's folders: writable before anything starts, and the same on every node of a cluster.

A search writes to three folders (`search.schema.SearchSettings`): ``search.storage_path`` (Ray's
experiment state), ``search.cache_dir`` (stage outputs that trials share) and, when the spec names a
``synthetic:`` language, ``search.synthetic_dir``. `check_writable` creates them and proves each can
be written, so a read-only or misplaced folder is one line naming the field before a teacher is
adapted or a trial runs. On a cluster the trials on other nodes must see the very same folders: the
driver writes a marker file with a fresh token into each (`write_markers`), a task on every node looks
for them (`search.tuner.check_nodes`), and `unshared_message` says which fields to set when a node
does not see them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import UsageError
from search.schema import Spec, default_home, in_ray_package

__all__ = ["MARKER_PREFIX", "check_writable", "input_paths", "leave_ray_package", "remove_markers", "search_folders",
           "steady_working_dir", "unshared_message", "writable_folder", "write_markers"]

MARKER_PREFIX = ".lrl-node-check-"
_EXAMPLE_NAMES = {"search.storage_path": "ray", "search.cache_dir": "stages", "search.synthetic_dir": "synthetic"}


def search_folders(spec: Spec) -> dict[str, str]:
    """``{field: folder}`` of the folders the search writes and its trials share."""
    folders = {"search.storage_path": spec.search.storage_path, "search.cache_dir": spec.search.cache_dir}
    sources = [spec.teacher.model or "", spec.data.corpus.source, spec.data.heldout.source,
               *(task.source for task in spec.data.tasks.values())]
    if any(source.startswith("synthetic:") for source in sources):
        folders["search.synthetic_dir"] = spec.search.synthetic_dir
    return folders


def input_paths(spec: Spec) -> dict[str, str]:
    """``{field: path}`` of the local files and folders the trials read (teacher, corpus, task data)."""
    paths = {"teacher.model": spec.teacher.model, "data.corpus.source": spec.data.corpus.source,
             "data.heldout.source": spec.data.heldout.source,
             **{f"data.tasks.{name}.source": task.source for name, task in spec.data.tasks.items()}}
    return {field: path for field, path in paths.items() if path is not None and os.path.isabs(path)}


def writable_folder(folder: str | Path, field: str, *, create: bool = True) -> Path:
    """``folder``, created if missing (with ``create``), once a file could be written in it.

    With ``create=False`` nothing is made: the folder, or the nearest of its parents that exists, is
    proven writable by a temporary file that is removed at once, so a check that fails later (another
    folder, the tracking store) leaves no folder behind.

    Raises:
        UsageError: naming ``field`` and the folder: a parent that is a file, a folder that cannot be
            created, or one that is read-only (probed by writing, which also holds for root).
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            where = f"{folder}: {parent}" if parent != folder else f"{folder}"
            raise UsageError(f"{field}: {where} is a file, not a folder")
    probe = folder if create else next(p for p in (folder, *folder.parents) if p.exists())
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".lrl-write-check-"):
            pass
    except OSError as error:
        raise UsageError(f"{field}: {folder}: cannot write there ({error.strerror or error}); "
                         f"set {field} to a folder you can write") from None
    return folder


def check_writable(folders: Mapping[str, str], *, create: bool = True) -> None:
    """Prove every folder of ``folders`` (``{field: folder}``) writable (`writable_folder`), creating
    them with ``create``."""
    for field, folder in folders.items():
        writable_folder(folder, field, create=create)


def write_markers(folders: Mapping[str, str]) -> dict[str, str]:
    """A marker file with a fresh token in every folder; returns ``{field: marker path}``."""
    token = uuid.uuid4().hex
    markers = {}
    for field, folder in folders.items():
        marker = Path(folder) / f"{MARKER_PREFIX}{token}"
        marker.write_text(token, encoding="utf-8")
        markers[field] = str(marker)
    return markers


def remove_markers(markers: Mapping[str, str]) -> None:
    for marker in markers.values():
        Path(marker).unlink(missing_ok=True)


def unshared_message(node: str, folders: Mapping[str, str], unseen_folders: list[str], missing_inputs: list[str],
                     inputs: Mapping[str, str]) -> str:
    """The one line that stops a search whose folders or inputs some node does not share with the driver."""
    parts = []
    if unseen_folders:
        shown = ", ".join(f"{field} ({folders[field]})" for field in unseen_folders)
        example = " ".join(f"--set {field}=/shared/lrl/{_EXAMPLE_NAMES.get(field, 'data')}" for field in unseen_folders)
        parts.append(f"{shown}: not the driver's folder on node {node}; set it to a folder every node sees, "
                     f"e.g. {example}")
    if missing_inputs:
        shown = ", ".join(f"{field} ({inputs[field]})" for field in missing_inputs)
        parts.append(f"{shown}: not found on node {node}; put it on storage every node sees")
    return "; ".join(parts)


def leave_ray_package() -> Path | None:
    """Leave the working directory when it is a Ray job's unpacked package; returns the folder moved to.

    ``ray job submit --working-dir .`` runs the driver inside the package Ray unpacked on the head
    node. Ray unpacks a package again, deleting the folder first, on any node whose runtime-env agent
    has not set it up yet, when the first task of the job lands there; where two nodes share their
    temp folder (two ``ray start`` on one machine, or a shared ``RAY_TMPDIR``) that is the driver's own
    folder, so the driver's working directory is a deleted folder from the node check on, and the next
    ``os.getcwd()`` (transformers calls it on import) raises ``FileNotFoundError``. The driver needs no
    working directory (the spec's paths are absolute, its modules are found by absolute paths, which
    the new copy serves): it moves to `search.schema.default_home` before any task starts.
    """
    try:
        here = Path(os.getcwd())
    except FileNotFoundError:
        here = Path(os.environ.get("PWD", "/"))
    if not in_ray_package(here):
        return None
    home = default_home(here)
    home.mkdir(parents=True, exist_ok=True)
    os.chdir(home)
    return home


def steady_working_dir() -> Path:
    """The working directory, entered again when it was deleted under the process (a Ray package unpacked
    anew at the same path, see `leave_ray_package`): the shell's ``$PWD``, else the home folder."""
    try:
        return Path(os.getcwd())
    except FileNotFoundError:
        for folder in (os.environ.get("PWD"), os.path.expanduser("~"), "/"):
            if folder and os.path.isdir(folder):
                os.chdir(folder)
                return Path(folder)
        raise
