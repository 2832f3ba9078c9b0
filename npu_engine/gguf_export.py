"""GGUF to OpenVINO IR in bounded memory: no full-precision model is ever held.

OpenVINO GenAI builds the model graph straight from the GGUF's quantized tensors (about the
file's size in memory); each weight is then read exactly from the file a block of rows at a time
and compressed with the recipe by NNCF's lowering (`requantize`). The tokenizer is the one the
de-quantize path writes (`gguf_tokenizer`), so both paths tokenize alike. Data-aware mixed
precision measures its activations on the GenAI-built model (`mixed_precision`). The graph is
mended for the NPU (`genai_graph`), so NPU recipes take this path too.
"""

import gc
import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npu_engine.apart import run_apart
from npu_engine.errors import ConversionError, first_line
from npu_engine.genai_graph import mend_for_npu
from npu_engine.gguf_file import GgufInfo, read_gguf
from npu_engine.gguf_standin import needs_standin, standin_refusal, write_standin
from npu_engine.gguf_tokenizer import write_tokenizer
from npu_engine.gguf_weights import gguf_rows, matrices, unsupported
from npu_engine.recipes import Recipe, calibration_texts
from npu_engine.torch_stack import hide_mismatched_torchvision

if TYPE_CHECKING:
    from npu_engine.requantize import WeightPlan

# What the conversion libraries raise for a model they cannot handle (OSError passes: a full disk
# is recognised by the converter).
LIBRARY_ERRORS = (ValueError, KeyError, IndexError, NotImplementedError, RuntimeError)


def recipe_refusal(recipe: Recipe) -> str | None:
    """Why `recipe` cannot run on the bounded path; None when it can. Data-aware mixed precision
    is done here; AWQ, scale estimation and GPTQ change the weights from the float model's
    activations, and stay on the de-quantize path."""
    if recipe.awq or recipe.scale_estimation or recipe.gptq:
        return f"recipe {recipe.name} adjusts weights from the float model's activations"
    return None


def refusal(info: GgufInfo, recipe: Recipe) -> str | None:
    """Why `info` cannot convert with `recipe` on the bounded path; None when it can."""
    return recipe_refusal(recipe) or unsupported(info) or standin_refusal(info)


def export_ir_from_gguf(info: GgufInfo, output: Path, recipe: Recipe, stage: Path) -> None:
    """Write `info`'s model compressed with `recipe`, tokenizer and configs, into `output`;
    a library's failure is a ConversionError of one line (GraphNotBuilt when GenAI's reader
    could not build the graph)."""
    try:
        _export(info, output, recipe, stage)
    except ConversionError:
        raise
    except LIBRARY_ERRORS as error:
        first = first_line(error)
        raise ConversionError(
            f"building {info.path.name} from its quantized tensors failed: {first}"
        ) from error


def _export(info: GgufInfo, output: Path, recipe: Recipe, stage: Path) -> None:
    import openvino as ov

    from npu_engine.mixed_precision import calibration_token_ids, mixed_precision
    from npu_engine.requantize import ExactWeight, apply_plans, plan_weights

    why_not = refusal(info, recipe)
    if why_not is not None:
        raise ConversionError(f"{info.path.name} cannot take the bounded path: {why_not}")
    output.mkdir(parents=True, exist_ok=True)
    # transformers (and torch under it) are loaded only in a process of their own: they would
    # otherwise sit under the graph build and the calibration, the peak of this path.
    run_apart(write_configs, info, output, stage / "tokenizer")
    graph_source = info
    if needs_standin(info):
        (stage / "standin").mkdir()
        write_standin(info, stage / "standin" / info.path.name)
        graph_source = read_gguf(stage / "standin" / info.path.name)
    graph = build_graph(graph_source, stage / "genai", output)
    if graph_source is not info:
        shutil.rmtree(stage / "standin")
    model = ov.Core().read_model(graph / "openvino_model.xml")
    # One graph for every device: the mends change nothing the CPU computes.
    mend_for_npu(model)
    with gguf_rows(info) as rows:
        exact = [
            ExactWeight(matrix.tensor.name, (matrix.rows, matrix.columns), partial(rows.rows, matrix))
            for matrix in matrices(info)
        ]
        plans = plan_weights(model, recipe, exact)
        if recipe.ratio < 1.0:
            texts = calibration_texts(recipe.calibration) if recipe.calibration else []
            token_ids = calibration_token_ids(output, texts[: recipe.num_samples or len(texts)])
            plans = mixed_precision(plans, recipe.ratio, graph / "openvino_model.xml", token_ids)
        apply_plans(plans)
        record_compression(model, recipe, plans)
        ov.save_model(model, output / "openvino_model.xml", compress_to_fp16=False)
        del model, exact, plans
        gc.collect()
    shutil.rmtree(graph)


class GraphNotBuilt(ConversionError):
    """OpenVINO GenAI's reader could not build the model from the file: the converter takes the
    de-quantize path instead."""


def record_compression(model: Any, recipe: Recipe, plans: Sequence["WeightPlan"]) -> None:
    """The runtime info NNCF writes of a compression (`nncf/weight_compression`), which a
    pre-converted IR's recipe is read from (sources/ir.py)."""
    if recipe.weight_format == "fp16":
        return
    int4 = any(plan.mode.startswith("int4") for plan in plans)
    values = {
        "mode": ("int4" if int4 else "int8") + ("_sym" if recipe.sym else "_asym"),
        "group_size": str(recipe.group_size if int4 else -1),
        "ratio": str(recipe.ratio),
        "awq": "False",
        "scale_estimation": "False",
        "gptq": "False",
    }
    for key, value in values.items():
        model.set_rt_info(value, ["nncf", "weight_compression", key])


def build_graph(info: GgufInfo, folder: Path, tokenizer_dir: Path) -> Path:
    """Have OpenVINO GenAI build `info`'s graph from its quantized tensors and save it in `folder`
    (GenAI saves next to the file it reads: `folder` holds a link to the GGUF). The tokenizer is
    the converted one in `tokenizer_dir`: GenAI's own GGUF tokenizer reader is not needed, and
    fails on files it does not expect (a SentencePiece vocabulary without merges)."""
    import openvino_genai

    folder.mkdir(parents=True)
    link = folder / "model.gguf"
    link.symlink_to(info.path.resolve())
    try:
        tokenizer = openvino_genai.Tokenizer(str(tokenizer_dir))
        pipeline = openvino_genai.LLMPipeline(str(link), tokenizer, "CPU", {}, enable_save_ov_model=True)
    except Exception as error:  # the C++ reader's std::out_of_range arrives as IndexError
        first = first_line(error)
        raise GraphNotBuilt(f"OpenVINO GenAI could not build {info.path.name}: {first}") from None
    del pipeline, tokenizer
    gc.collect()
    link.unlink()
    if not (folder / "openvino_model.xml").is_file():
        raise ConversionError(f"OpenVINO GenAI built {info.path.name} but saved no model")
    return folder


def write_configs(info: GgufInfo, output: Path, scratch: Path) -> None:
    """The tokenizer (files and OpenVINO IR), config.json and generation_config.json, as the
    de-quantize path's export writes them (run apart from the conversion: see _export)."""
    hide_mismatched_torchvision()  # a process of its own: nothing has imported transformers yet
    from optimum.exporters.openvino.convert import export_tokenizer
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from npu_engine.export import TASK

    scratch.mkdir(parents=True)
    write_tokenizer(info, scratch, info.path.parent, info.path.name)
    try:
        config = AutoConfig.from_pretrained(info.path.parent, gguf_file=info.path.name)
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as error:
        raise ConversionError(
            f"transformers could not read {info.path.name}'s configuration: {error}"
        ) from None
    config.save_pretrained(output)
    GenerationConfig.from_model_config(config).save_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(scratch)
    tokenizer.save_pretrained(output)
    export_tokenizer(tokenizer, output, task=TASK)
    if not (output / "openvino_tokenizer.xml").is_file():
        raise ConversionError(f"no OpenVINO tokenizer could be made for {info.path.name}")
