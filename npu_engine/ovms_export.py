"""A converted model as an OpenVINO Model Server model repository, in the layout OVMS documents
(demos/common/export_models/export_model.py): `DIR/config.json` lists each servable by name and
base path; `DIR/NAME/` holds the IR, its tokenizer and detokenizer and a MediaPipe `graph.pbtxt`
(`HttpLLMCalculator` for a chat model, `EmbeddingsCalculatorOV` for an embedding model).

The files are the store's, checked against the model's manifest as they are copied; the folder
appears whole or not at all (written beside its place, then renamed), and `config.json` is
replaced, never rewritten in place, keeping every other servable it lists.
"""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from npu_engine.errors import DiskSpaceError, StoreError, UserInputError
from npu_engine.families import ModelFamily
from npu_engine.files import folder_size, human_bytes, nearest_existing, write_text_atomically
from npu_engine.manifest import Manifest
from npu_engine.store import ModelStore

OvmsDevice = Literal["CPU", "GPU", "NPU"]
OVMS_DEVICES: tuple[OvmsDevice, ...] = ("CPU", "GPU", "NPU")
CONFIG_NAME = "config.json"
GRAPH_NAME = "graph.pbtxt"
DRAFT_FOLDER = "draft"
# OVMS's pooling names for the engine's (EmbeddingInfo.pooling).
POOLING = {"mean": "MEAN", "cls": "CLS", "last_token": "LAST"}


@dataclass(frozen=True)
class OvmsRequest:
    """Which stored model to export as servable `servable` (default: its store name) into the
    repository `directory`, for OVMS device `device` (default: the one it was converted for; a CPU
    conversion serves on the GPU too), with `draft` (a stored model) for speculative decoding, and
    the prompt limit an NPU compiles for. `force` replaces a servable of that name."""

    name: str
    directory: Path
    servable: str | None = None
    device: OvmsDevice | None = None
    draft: str | None = None
    npu_max_prompt: int = 1024
    force: bool = False


@dataclass(frozen=True)
class OvmsExport:
    """What was written: the servable's folder, the repository's config, its graph, bytes copied."""

    servable: str
    folder: Path
    config: Path
    graph: Path
    device: OvmsDevice
    size: int


def export_ovms(store: ModelStore, request: OvmsRequest, family: ModelFamily | None) -> OvmsExport:
    """Write `request`'s model into its OVMS repository; `family` (the catalog's, when the model is
    a catalog model) decides OVMS's tool and reasoning parsers."""
    manifest = store.get(request.name)
    device = request.device or _device_of(manifest)
    if device == "NPU" and manifest.device != "npu":
        raise UserInputError(
            f"{manifest.name} was converted for {manifest.device.upper()} with {manifest.recipe.name}; "
            f"the NPU needs a model converted for it (npu-convert ... --device npu)"
        )
    draft = store.get(request.draft) if request.draft else None
    if draft is not None and manifest.embedding is None and draft.embedding is not None:
        raise UserInputError(f"{draft.name} is an embedding model: it cannot draft for {manifest.name}")
    if draft is not None and manifest.embedding is not None:
        raise UserInputError(f"{manifest.name} is an embedding model: it takes no draft model")
    servable = _servable_name(request.servable or manifest.name)
    directory = request.directory
    if directory.exists() and not directory.is_dir():
        raise UserInputError(f"{directory} is a file, not a model repository folder")
    folder = directory / servable
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{folder} is a file, not a servable folder")
    if folder.exists() and not request.force:
        raise StoreError(f"{folder} already exists: pass --force to replace it")
    config_path = directory / CONFIG_NAME
    config = _read_config(config_path)
    graph = (
        embedding_graph(manifest, device)
        if manifest.embedding is not None
        else llm_graph(device, family, request.npu_max_prompt, draft is not None)
    )
    needed = manifest.size + (draft.size if draft is not None else 0)
    free = shutil.disk_usage(nearest_existing(directory)).free
    if free < needed:
        raise DiskSpaceError(
            f"exporting {manifest.name} needs {human_bytes(needed)} in {directory}; "
            f"{human_bytes(free)} is free"
        )
    try:
        with _staged(folder) as staged:
            _copy_checked(store, manifest, staged)
            if draft is not None:
                _copy_checked(store, draft, staged / DRAFT_FOLDER)
            (staged / GRAPH_NAME).write_text(graph, "utf-8")
        write_text_atomically(config_path, add_servable(config, servable, servable))
    except OSError as error:
        raise StoreError(f"writing {folder} failed: {error.strerror or error}") from None
    return OvmsExport(servable, folder, config_path, folder / GRAPH_NAME, device, folder_size(folder))


def llm_graph(device: OvmsDevice, family: ModelFamily | None, npu_max_prompt: int, draft: bool) -> str:
    """The MediaPipe graph OVMS serves a chat model with: continuous batching with prefix caching
    on `device`, the tool parser Qwen-style `<tool_call>` JSON needs (hermes3) and the reasoning
    parser for a family that thinks in <think> (qwen3's)."""
    plugin: dict[str, Any] = {}
    if device == "NPU":
        plugin["DEVICE_PROPERTIES"] = {"NPU": {"MAX_PROMPT_LEN": npu_max_prompt}}
    options = [
        'models_path: "./"',
        f"plugin_config: '{json.dumps(plugin)}'",
        "enable_prefix_caching: true",
        "cache_size: 0",
        "max_num_seqs: 256",
        f'device: "{device}"',
    ]
    if draft:
        options += [f'draft_models_path: "./{DRAFT_FOLDER}"', f'draft_device: "{device}"']
    if family is not None and family.tools == "template":
        options.append('tool_parser: "hermes3"')
    if family is not None and family.reasoning:
        options.append('reasoning_parser: "qwen3"')
    body = ",\n".join(f"          {option}" for option in options)
    return f"""# OVMS_GRAPH_QUEUE_MAX_SIZE: AUTO
input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"

node: {{
  name: "LLMExecutor"
  calculator: "HttpLLMCalculator"
  input_stream: "LOOPBACK:loopback"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  input_side_packet: "LLM_NODE_RESOURCES:llm"
  input_side_packet: "LLM_NODE_EXECUTION_CONTEXTS:llm_ctx"
  output_stream: "LOOPBACK:loopback"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
  input_stream_info: {{
    tag_index: 'LOOPBACK:0',
    back_edge: true
  }}
  node_options: {{
      [type.googleapis.com / mediapipe.LLMCalculatorOptions]: {{
{body}
      }}
  }}
  input_stream_handler {{
    input_stream_handler: "SyncSetInputStreamHandler",
    options {{
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] {{
        sync_set {{
          tag_index: "LOOPBACK:0"
        }}
      }}
    }}
  }}
}}
"""


def embedding_graph(manifest: Manifest, device: OvmsDevice) -> str:
    """The MediaPipe graph OVMS serves an embedding model with, pooling and normalising as the
    engine does (the manifest's EmbeddingInfo)."""
    info = manifest.embedding
    if info is None:
        raise ValueError(f"{manifest.name} is not an embedding model")
    return f"""# OVMS_GRAPH_QUEUE_MAX_SIZE: AUTO
input_stream: "REQUEST_PAYLOAD:input"
output_stream: "RESPONSE_PAYLOAD:output"
node {{
  name: "EmbeddingsExecutor"
  input_side_packet: "EMBEDDINGS_NODE_RESOURCES:embeddings_servable"
  calculator: "EmbeddingsCalculatorOV"
  input_stream: "REQUEST_PAYLOAD:input"
  output_stream: "RESPONSE_PAYLOAD:output"
  node_options: {{
    [type.googleapis.com / mediapipe.EmbeddingsCalculatorOVOptions]: {{
      models_path: "./",
      plugin_config: '{{}}',
      normalize_embeddings: {"true" if info.normalize else "false"},
      pooling: {POOLING[info.pooling]},
      target_device: "{device}"
    }}
  }}
}}
"""


def add_servable(config: dict[str, Any], name: str, base_path: str) -> str:
    """`config` (an OVMS config.json's content) with servable `name` at `base_path`, as OVMS's
    export script adds it: an entry of that name gets the new path, any other entry is kept."""
    models = config.setdefault("model_config_list", [])
    entry = next(
        (
            m
            for m in models
            if isinstance(m, dict) and isinstance(m.get("config"), dict) and m["config"].get("name") == name
        ),
        None,
    )
    if entry is None:
        models.append({"config": {"name": name, "base_path": base_path}})
    else:
        entry["config"]["base_path"] = base_path
    return json.dumps(config, indent=4) + "\n"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"model_config_list": []}
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path} is not a readable OVMS config.json ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_config_list", []), list):
        raise UserInputError(f"{path} is not an OVMS config.json (no model_config_list list)")
    return config


def _device_of(manifest: Manifest) -> OvmsDevice:
    return "NPU" if manifest.device == "npu" else "GPU" if manifest.device == "gpu" else "CPU"


def _servable_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name == CONFIG_NAME:
        raise UserInputError(f"{name!r} cannot name a servable folder")
    return name


def _copy_checked(store: ModelStore, manifest: Manifest, into: Path) -> None:
    """Copy `manifest`'s files into `into`, once the store's folder matches the manifest."""
    source = store.checked_path(manifest)
    for entry in manifest.files:
        target = into / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / entry.path, target)


@contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A folder beside `folder` to write into; renamed to `folder` (replacing it) when the block
    ends, deleted when it fails."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    try:
        yield staged
        if folder.exists():
            old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
            folder.rename(old)
            try:
                staged.rename(folder)
            except OSError:
                old.rename(folder)
                raise
            shutil.rmtree(old)
        else:
            staged.rename(folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
