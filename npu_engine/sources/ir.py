"""Pre-converted OpenVINO IR: a folder (or hub repo, such as OpenVINO's `<model>-int4-ov`) that
already holds `openvino_model.xml` and its tokenizers is stored as it is, never re-converted.

Its recipe is read from the IR itself: NNCF records its weight-compression parameters in the
model's runtime info (`nncf/weight_compression`), which every optimum-intel export carries.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npu_engine.errors import SourceError, first_line
from npu_engine.files import folder_size
from npu_engine.progress import Reporter
from npu_engine.recipes import DeviceClass, Recipe, WeightFormat
from npu_engine.sources import ResolvedSource, folder_digest, slug

MODEL_XML = "openvino_model.xml"
# What GenAI's LLMPipeline opens: the model, and the tokenizer and detokenizer as IR.
REQUIRED = (
    MODEL_XML,
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
    "config.json",
)
# Suffixes of OpenVINO's published repos (OpenVINO/Qwen2.5-Coder-1.5B-Instruct-int4-ov) and of
# optimum-cli's habits, stripped to find the model's own name.
NAME_SUFFIXES = ("-ov", "-openvino", "-int4", "-int8", "-fp16", "-cw", "-sym", "-asym", "-awq", "-npu")
_INTEGER_TYPES = {"u4", "i4", "u8", "i8"}
_FLOAT_TYPES = {"f16", "bf16", "f32"}


@dataclass(frozen=True)
class Compression:
    """NNCF's weight-compression parameters as an IR records them."""

    mode: str  # int4_sym, int4_asym, int8_asym, int8_sym; "fp16" when none are recorded
    group_size: int
    ratio: float
    awq: bool
    scale_estimation: bool
    gptq: bool
    data_aware: bool


def is_ir_folder(folder: Path) -> bool:
    return (folder / MODEL_XML).is_file()


def read_compression(model: Any) -> Compression:
    """The weight compression of an `openvino.Model`, from its `nncf/weight_compression` rt_info."""

    def info(key: str, default: str) -> str:
        path = ["nncf", "weight_compression", key]
        return str(model.get_rt_info(path).astype(str)) if model.has_rt_info(path) else default

    mode = info("mode", "fp16")
    ratio = float(info("ratio", "1.0"))
    awq, estimation, gptq = (info(key, "False") == "True" for key in ("awq", "scale_estimation", "gptq"))
    return Compression(
        mode=mode,
        group_size=int(info("group_size", "-1")),
        ratio=ratio,
        awq=awq,
        scale_estimation=estimation,
        gptq=gptq,
        data_aware=awq or estimation or gptq or ratio < 1.0,
    )


def weight_count(model: Any) -> int:
    """Weights of an IR: the elements of its compressed (integer) weight constants, or of its float
    matrices when nothing is compressed. Zero points are counted too: about 1% more for asymmetric
    INT4 in groups of 128."""
    sizes: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        shape = list(op.get_output_partial_shape(0).to_shape())
        if len(shape) < 2:
            continue
        count = 1
        for dim in shape:
            count *= int(dim)
        kind = op.get_output_element_type(0).get_type_name()
        sizes[kind] = sizes.get(kind, 0) + count
    compressed = sum(count for kind, count in sizes.items() if kind in _INTEGER_TYPES)
    return compressed or sum(count for kind, count in sizes.items() if kind in _FLOAT_TYPES)


def recipe_of(compression: Compression) -> Recipe:
    """A Recipe that describes how the IR was compressed; valid on the devices that can run it (the
    NPU only for symmetric INT4)."""
    weight_format: WeightFormat = "int4" if compression.mode.startswith("int4") else "int8"
    if compression.mode == "fp16":
        weight_format = "fp16"
    sym = compression.mode.endswith("_sym")
    devices: tuple[DeviceClass, ...] = (
        ("cpu", "gpu", "npu") if compression.mode == "int4_sym" else ("cpu", "gpu")
    )
    group = "cw" if compression.group_size <= 0 else f"g{compression.group_size}"
    name = f"ov-{compression.mode.replace('_', '-')}" + ("" if weight_format == "fp16" else f"-{group}")
    if compression.ratio < 1.0:
        name += f"-r{compression.ratio:g}"
    extras = [label for label, on in (("awq", compression.awq), ("se", compression.scale_estimation)) if on]
    name += "".join(f"-{label}" for label in extras) + ("-gptq" if compression.gptq else "")
    return Recipe(
        name=name,
        description=(
            f"pre-converted IR, stored as it was: {compression.mode}, group {compression.group_size}, "
            f"ratio {compression.ratio:g}" + (", data-aware" if compression.data_aware else "")
        ),
        weight_format=weight_format,
        sym=sym,
        group_size=compression.group_size,
        ratio=compression.ratio,
        awq=compression.awq,
        scale_estimation=compression.scale_estimation,
        gptq=compression.gptq,
        calibration=None,
        num_samples=None,
        group_size_fallback="adjust",
        devices=devices,
    )


def model_name(folder_name: str) -> str:
    """The model's own name from a repo or folder name: OpenVINO's suffixes stripped."""
    name = slug(folder_name)
    stripped = True
    while stripped:
        stripped = False
        for suffix in NAME_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, stripped = name[: -len(suffix)], True
    return name


def resolve_ir_folder(
    folder: Path,
    reporter: Reporter,
    kind: str = "ir-folder",
    spec: str | None = None,
    name: str | None = None,
) -> ResolvedSource:
    """Check a pre-converted IR folder and describe it, with the recipe it was compressed with."""
    import openvino as ov

    missing = [file for file in REQUIRED if not (folder / file).is_file()]
    if missing:
        raise SourceError(
            f"{folder} holds OpenVINO IR but not {', '.join(missing)}: a pre-converted model needs its "
            "model, tokenizer and detokenizer IR and config.json (convert the original model instead)"
        )
    try:
        config: dict[str, Any] = json.loads((folder / "config.json").read_text("utf-8"))
        model = ov.Core().read_model(folder / MODEL_XML)
    except (ValueError, RuntimeError) as error:
        first = first_line(error)
        raise SourceError(f"{folder} is not a readable OpenVINO model: {first}") from None
    hashed = sorted(path for path in folder.rglob("*") if path.is_file() and path.name != "manifest.json")
    digest = folder_digest(folder, hashed, reporter)
    text_config = config.get("text_config", config)
    return ResolvedSource(
        kind=kind,
        id=spec if spec is not None else str(folder),
        path=folder,
        format="ir",
        digest=digest,
        default_name=name or model_name(folder.name),
        architecture=str(config.get("model_type", "")),
        parameters=weight_count(model),
        context_length=int(text_config.get("max_position_embeddings", 0)),
        size=folder_size(folder),
        recipe=recipe_of(read_compression(model)),
    )
