"""The conversion work itself: GGUF to a Hugging Face folder, then optimum-intel/NNCF to OpenVINO IR.

Only this module imports torch, transformers and optimum; the runtime never loads it.
"""

import logging
from pathlib import Path
from typing import Any

from npu_engine.errors import ConversionError, first_line
from npu_engine.gguf_file import GgufInfo
from npu_engine.gguf_tokenizer import write_tokenizer
from npu_engine.recipes import Recipe, calibration_texts

TASK = "text-generation-with-past"
EMBEDDING_TASK = "feature-extraction"  # an encoder's last hidden state: TextEmbeddingPipeline pools it


def quiet_libraries() -> None:
    """Silence the libraries' own logs and bars; our reporter speaks for them."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    from npu_engine.requantize import quiet_nncf

    quiet_nncf()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()
    for name in ("optimum", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def dequantize_gguf(info: GgufInfo, folder: Path) -> None:
    """Write a Hugging Face folder with the de-quantized (float32) weights of a GGUF file.

    The tokenizer is rebuilt from the GGUF's own metadata (see gguf_tokenizer) rather than taken
    from transformers' architecture-keyed converter.
    """
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            info.path.parent, gguf_file=info.path.name, dtype=torch.float32, low_cpu_mem_usage=True
        )
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as error:
        raise ConversionError(f"transformers could not read {info.path.name}: {error}") from None
    model.save_pretrained(folder)
    del model
    write_tokenizer(info, folder, info.path.parent, info.path.name)


def quantization_config(recipe: Recipe, tokenizer_dir: Path) -> Any:
    """The optimum-intel weight compression config that `recipe` describes (None for FP16)."""
    from optimum.intel import OVWeightQuantizationConfig

    if recipe.weight_format == "fp16":
        return None
    if recipe.weight_format == "int8":
        return OVWeightQuantizationConfig(bits=8, sym=recipe.sym)
    options: dict[str, Any] = {}
    if recipe.calibration is not None:
        texts = calibration_texts(recipe.calibration)
        options = {
            "dataset": texts,
            "tokenizer": str(tokenizer_dir),
            "num_samples": recipe.num_samples or len(texts),
            "quant_method": "awq" if recipe.awq else "default",
            "scale_estimation": recipe.scale_estimation,
            "gptq": recipe.gptq,
        }
    return OVWeightQuantizationConfig(
        bits=4,
        sym=recipe.sym,
        group_size=recipe.group_size,
        ratio=recipe.ratio,
        group_size_fallback=recipe.group_size_fallback,
        **options,
    )


def export_ir(
    hf_folder: Path, output: Path, recipe: Recipe, trust_remote_code: bool, task: str = TASK
) -> None:
    """Export `hf_folder` to OpenVINO IR in `output` with `recipe`, tokenizer and detokenizer included.

    The same two steps as `optimum-cli export openvino`: a float export, then weight compression.
    `task` is the exporter's: a causal LM with its KV cache, or `feature-extraction` for an
    embedding model (its last hidden state, which TextEmbeddingPipeline pools and normalises).
    """
    from optimum.exporters.openvino.__main__ import _main_quantize, main_export
    from optimum.intel import OVConfig

    config = quantization_config(recipe, hf_folder)
    ov_config = OVConfig(dtype="fp16") if config is None else OVConfig(quantization_config=config)
    try:
        main_export(
            str(hf_folder),
            output,
            task=task,
            ov_config=ov_config,
            convert_tokenizer=True,
            trust_remote_code=trust_remote_code,
            library_name="transformers",
        )
        if config is not None:
            _main_quantize(
                model_name_or_path=str(hf_folder),
                task=task,
                library_name="transformers",
                quantization_config=config,
                output=output,
                cache_dir=None,
                trust_remote_code=trust_remote_code,
            )
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as error:
        first = first_line(error)
        raise ConversionError(f"export to OpenVINO failed: {first}") from error
    if not (output / "openvino_model.xml").is_file() or not (output / "openvino_tokenizer.xml").is_file():
        raise ConversionError(f"export to OpenVINO left no model or tokenizer in {output}")


def tool_versions() -> dict[str, str]:
    """Versions of the packages that shaped a conversion, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "npu-engine",
        "openvino",
        "openvino-genai",
        "openvino-tokenizers",
        "optimum-intel",
        "optimum",
        "nncf",
        "transformers",
        "torch",
        "gguf",
        "tokenizers",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
