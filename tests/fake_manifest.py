"""A minimal but complete model folder for store tests: real manifest, placeholder payload.

The store treats model folders as opaque; its tests need folders, not OpenVINO."""

from pathlib import Path

from npu_engine.manifest import MANIFEST_NAME, Manifest, SourceInfo, hash_folder
from npu_engine.recipes import load_recipe_book


def write_fake_model(folder: Path, name: str, marker: str = "x") -> Manifest:
    folder.mkdir(parents=True)
    (folder / "marker").write_text(marker)
    manifest = Manifest(
        name=name,
        model=name,
        source=SourceInfo("gguf", "test", "sha256:" + "0" * 64),
        recipe=load_recipe_book().get("int8"),
        device="cpu",
        parameters=1,
        architecture="llama",
        context_length=8,
        files=hash_folder(folder),
        tool_versions={},
        created="2026-01-01T00:00:00+00:00",
    )
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    return manifest
