"""Source specs and their checks: each bad input gets its own clear error, before any conversion."""

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from npu_engine.catalog import PackagedFile, PackagedPart
from npu_engine.errors import ChecksumError, SourceError, UserInputError
from npu_engine.gguf_file import read_gguf
from npu_engine.progress import SilentReporter
from npu_engine.sources import classify
from npu_engine.sources.gguf import resolve_gguf
from npu_engine.sources.hf import resolve_hf_folder
from npu_engine.sources.ollama import parse_name, resolve_ollama
from npu_engine.sources.packaged import assemble

QUIET = SilentReporter()


def tiny_gguf(path: Path, architecture: str) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_classify_specs(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert classify("hf:Qwen/Qwen2.5-Coder-1.5B-Instruct") == ("hf-hub", "Qwen/Qwen2.5-Coder-1.5B-Instruct")
    assert classify("ollama:qwen2.5-coder:1.5b") == ("ollama", "qwen2.5-coder:1.5b")
    assert classify("pkg:smollm2-135m-instruct") == ("packaged", "smollm2-135m-instruct")
    assert classify(str(tmp_path)) == ("hf-folder", str(tmp_path))
    assert classify(str(tmp_path / "model.gguf")) == ("gguf", str(tmp_path / "model.gguf"))
    with pytest.raises(UserInputError, match="no such file or folder: .*nowhere"):
        classify(str(tmp_path / "nowhere"))


def test_real_gguf_is_described(smollm_gguf: Path) -> None:
    info = read_gguf(smollm_gguf)
    assert (info.architecture, info.parameters, info.context_length) == ("llama", 134515008, 8192)
    assert "Q4_1" in info.tensor_types


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("hello world")
    with pytest.raises(SourceError, match=r"is not a GGUF file \(it starts with b'hell'"):
        read_gguf(path)


def test_truncated_gguf(tmp_path: Path, smollm_gguf: Path) -> None:
    path = tmp_path / "cut.gguf"
    with smollm_gguf.open("rb") as whole:
        path.write_bytes(whole.read(20_000_000))
    with pytest.raises(SourceError, match=r"truncated|not a readable GGUF"):
        read_gguf(path)


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "bert.gguf", "bert")
    with pytest.raises(
        SourceError, match=r"architecture 'bert' is not supported \(supported: llama, qwen2\)"
    ):
        resolve_gguf(path, QUIET)


def test_hf_folder_checks(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="has no config.json"):
        resolve_hf_folder(tmp_path, QUIET, trust_remote_code=False)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(SourceError, match=r"no \*\.safetensors weights"):
        resolve_hf_folder(tmp_path, QUIET, trust_remote_code=False)


def test_remote_code_needs_the_flag(tmp_path: Path, smollm_hf_folder: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(smollm_hf_folder / "model.safetensors")
    (folder / "config.json").write_text(
        json.dumps({"model_type": "my-arch", "auto_map": {"AutoModel": "m.M"}})
    )
    with pytest.raises(SourceError, match="needs code shipped with the model.*--trust-remote-code"):
        resolve_hf_folder(folder, QUIET, trust_remote_code=False)
    (folder / "config.json").write_text(json.dumps({"model_type": "my-arch"}))
    with pytest.raises(SourceError, match="unsupported architecture 'my-arch'"):
        resolve_hf_folder(folder, QUIET, trust_remote_code=True)


def test_hf_folder_is_described(smollm_hf_folder: Path) -> None:
    source = resolve_hf_folder(smollm_hf_folder, QUIET, trust_remote_code=False)
    assert (source.format, source.architecture, source.context_length) == ("hf", "llama", 8192)
    # Tied embeddings are stored once in safetensors: the parameter count is the model's own.
    assert source.parameters == 134515008
    assert source.digest.startswith("sha256:")


# -- Ollama ---------------------------------------------------------------------------------------


def ollama_store(
    root: Path, blob: Path, name: str = "smollm2", tag: str = "135m", digest: str | None = None
) -> Path:
    """An Ollama store laid out as Ollama writes it, around a real GGUF blob."""
    content_digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    target = root / "blobs" / f"sha256-{content_digest}"
    if not target.exists():
        target.hardlink_to(blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "1" * 64,
        },
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": digest or f"sha256:{content_digest}",
            },
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "2" * 64},
        ],
    }
    folder = root / "manifests" / "registry.ollama.ai" / "library" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / tag).write_text(json.dumps(manifest))
    return root


def test_ollama_names() -> None:
    assert parse_name("qwen2.5-coder:1.5b") == ("registry.ollama.ai", "library", "qwen2.5-coder", "1.5b")
    assert parse_name("me/coder") == ("registry.ollama.ai", "me", "coder", "latest")
    for bad in ("../x", "a/b/c/d", "x:../../etc", "..:1"):
        with pytest.raises(UserInputError, match="invalid Ollama model name"):
            parse_name(bad)


def test_ollama_resolves_the_model_blob(tmp_path: Path, smollm_gguf: Path) -> None:
    store = ollama_store(tmp_path / "ollama", smollm_gguf)
    source = resolve_ollama("smollm2:135m", store, QUIET)
    assert (source.kind, source.id, source.default_name) == ("ollama", "ollama:smollm2:135m", "smollm2-135m")
    assert source.digest == "sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_ollama_unknown_tag_lists_the_known_ones(tmp_path: Path, smollm_gguf: Path) -> None:
    store = ollama_store(tmp_path / "ollama", smollm_gguf)
    with pytest.raises(SourceError, match=r"unknown Ollama model smollm2:7b \(tags of smollm2: 135m\)"):
        resolve_ollama("smollm2:7b", store, QUIET)
    with pytest.raises(SourceError, match="no model 'llama9'"):
        resolve_ollama("llama9", store, QUIET)


@pytest.mark.parametrize(
    "digest", ["sha256:../../../etc/passwd", "sha256:ABC", "md5:" + "0" * 32, "sha256:" + "0" * 63]
)
def test_ollama_bad_digest(tmp_path: Path, smollm_gguf: Path, digest: str) -> None:
    store = ollama_store(tmp_path / "ollama", smollm_gguf, digest=digest)
    with pytest.raises(SourceError, match="invalid layer digest"):
        resolve_ollama("smollm2:135m", store, QUIET)


def test_ollama_blob_must_match_its_digest(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF not really")
    store = ollama_store(tmp_path / "ollama", fake)
    (store / "blobs" / f"sha256-{hashlib.sha256(fake.read_bytes()).hexdigest()}").unlink()
    wrong = hashlib.sha256(b"something else").hexdigest()
    (store / "blobs" / f"sha256-{wrong}").write_bytes(b"GGUF not really")
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    manifest.write_text(manifest.read_text().replace(hashlib.sha256(fake.read_bytes()).hexdigest(), wrong))
    with pytest.raises(ChecksumError, match="is corrupt: its sha256 is"):
        resolve_ollama("smollm2:135m", store, QUIET)


def test_ollama_blob_symlink_out_of_the_store_is_refused(tmp_path: Path, smollm_gguf: Path) -> None:
    store = ollama_store(tmp_path / "ollama", smollm_gguf)
    blob = next((store / "blobs").iterdir())
    blob.unlink()
    blob.symlink_to(smollm_gguf)
    with pytest.raises(SourceError, match="resolves outside the store"):
        resolve_ollama("smollm2:135m", store, QUIET)


def test_missing_ollama_store(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no Ollama store at .*set OLLAMA_MODELS"):
        resolve_ollama("qwen2.5-coder:1.5b", tmp_path / "none", QUIET)


# -- packaged -------------------------------------------------------------------------------------


def wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    return path


def test_packaged_parts_are_assembled_in_order(tmp_path: Path) -> None:
    data = [b"first part-", b"second part"]
    wheels = [wheel(tmp_path / f"p{i}.whl", f"p{i}/data/part0{i}.bin", chunk) for i, chunk in enumerate(data)]
    packaged = PackagedFile(
        file="model.gguf",
        size=len(b"".join(data)),
        sha256=hashlib.sha256(b"".join(data)).hexdigest(),
        parts=tuple(PackagedPart(f"p{i}", "1.0", f"p{i}/data/part0{i}.bin") for i in range(2)),
    )
    assemble(packaged, wheels, tmp_path / "model.gguf", QUIET)
    assert (tmp_path / "model.gguf").read_bytes() == b"first part-second part"


def test_packaged_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    wheels = [wheel(tmp_path / "p0.whl", "p0/data/part01.bin", b"tampered!")]
    packaged = PackagedFile(
        "model.gguf",
        9,
        hashlib.sha256(b"original!").hexdigest(),
        (PackagedPart("p0", "1", "p0/data/part01.bin"),),
    )
    with pytest.raises(ChecksumError, match="has sha256 .*, expected"):
        assemble(packaged, wheels, tmp_path / "model.gguf", QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0.whl"]
