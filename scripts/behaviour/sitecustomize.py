"""Loaded by every Python process of a capture (this folder is on PYTHONPATH), including servers a
test starts as subprocesses (`npu-engine serve`), which no pytest plugin reaches.

- `$NPU_BEHAVIOUR_TREE`: the shipped data packages (`npu_engine.data.models` and the others, which
  the venv's editable install maps to /work/main's folders) are read from that tree instead, as
  its pyproject maps them, so that each side of a comparison runs on its own catalog and data.
- `$NPU_BEHAVIOUR_HTTP_DIR`: `npu_engine.server.app.create_app` records every app it builds (see
  http_recorder.py), patched as the module is imported."""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from http_recorder import SINK_ENV, record_apps

APP_MODULE = "npu_engine.server.app"


class TreeData(importlib.abc.MetaPathFinder):
    """Finds the data packages named in `[tool.setuptools.package-dir]` in the tree's folders."""

    def __init__(self, tree: Path) -> None:
        with (tree / "pyproject.toml").open("rb") as file:
            dirs = tomllib.load(file)["tool"]["setuptools"].get("package-dir", {})
        self.folders = {name: tree / folder for name, folder in dirs.items() if name}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        folder = self.folders.get(fullname)
        if folder is None or not (folder / "__init__.py").is_file():
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


class RecordOnImport(importlib.abc.MetaPathFinder):
    """Patches npu_engine.server.app right after it is executed, before anyone imports from it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != APP_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader: Any = spec.loader
        execute = loader.exec_module
        folder = self.folder

        def exec_module(module: ModuleType) -> None:
            execute(module)
            record_apps(module, folder)

        loader.exec_module = exec_module
        return spec


def _install() -> None:
    tree = os.environ.get("NPU_BEHAVIOUR_TREE")
    if tree:
        sys.meta_path.insert(0, TreeData(Path(tree)))
    sink = os.environ.get(SINK_ENV)
    if sink:
        sys.meta_path.insert(0, RecordOnImport(Path(sink)))


_install()
