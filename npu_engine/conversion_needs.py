"""What a conversion needs at its peak, memory and disk, known before any work is done.

Estimated from the source's weight count, its format and the recipe, with per-weight costs
fitted to peaks measured with `/usr/bin/time -v npu-convert` on this project's models (README,
"Memory a conversion needs"); tests hold the estimate within 25% of a measured peak.
"""

from collections.abc import Callable
from dataclasses import dataclass

import psutil

from npu_engine.errors import ConversionMemoryError
from npu_engine.files import human_bytes
from npu_engine.recipes import Recipe
from npu_engine.sources import SourceFormat

# Resident memory of a conversion before any weight is read: Python with torch, transformers,
# optimum-intel, NNCF and OpenVINO imported; a GGUF source adds its reader and the tokenizer
# rebuilt from its metadata.
BASE_MEMORY = 600_000_000
GGUF_BASE_MEMORY = 300_000_000
# Resident bytes per weight of the source at the peak: the float32 model held by the exporter while
# it is traced and the float IR built beside it, then weight compression on that IR. Measured (GB
# at the peak, weights as the source file counts them): all-MiniLM-L6-v2 (23M) 0.68, SmolLM2-135M
# 1.39, Qwen2.5-Coder-0.5B GGUF (630M) 4.09 (INT8) to 4.48 (INT4), Qwen2.5-Coder-1.5B GGUF (1,777M)
# 9.36 (INT4, data-free).
FLOAT_PEAK_BYTES = 5.0
# A data-aware recipe (a calibration set) also holds the activations and statistics it collects:
# Qwen2.5-Coder-1.5B int4-asym-mixed peaked at 14.93 GB, 5.6 GB above the data-free INT4.
CALIBRATION_PEAK_EXTRA_BYTES = 2.9
# Disk: the float32 folder de-quantized from a GGUF, the float export optimum writes before
# compressing, and the compressed result; plus room for the tokenizer.
GGUF_DEQUANT_BYTES = 4.0
FLOAT_EXPORT_BYTES = 4.0
DISK_SLACK_BYTES = 512 << 20
# The bounded path (recipe path gguf-direct, npu_engine/gguf_export.py) never holds a float
# model: its peak is OpenVINO GenAI's reader building the graph, which holds the file's tensors as
# read and again unpacked into its own layout, then the new weights beside the mapped source.
# Per byte of the GGUF, measured with /usr/bin/time -v (peak GB, file GB): with K-quants, whose
# Q6_K parts unpack to 8 bits in groups of 16, or a stand-in for other types (gguf_standin):
# Qwen2.5-Coder-1.5B Q4_K_M (1.12) int4-asym 4.14, int4-asym-mixed 4.37; Qwen2.5-Coder-0.5B
# Q4_K_M with Q5_0 (0.49) int8 2.26. Only Q4_0/Q4_1/Q8_0/F16: the DeepSeek-Coder-6.7B shape,
# synthetic Q4_0 (3.87), int4-sym-npu-cw 8.60; SmolLM2 Q4_1 (0.10) int8 0.83, int4-sym-npu 1.07.
# Data-aware mixed precision also runs a compiled copy of the GenAI graph on calibration text.
# Disk: GenAI's graph (its weights unpacked, about 1.15 times the file) beside the result.
# Since transformers and torch load only in a process of their own (write_configs) and NNCF after
# the calibration, the base is 0.45 GB lower: measured as the process tree's summed RSS, the 1.5B
# int4-asym-mixed peaked at 3.68 GB (4.37 before), the 0.5B int8 at 1.87 (2.26), SmolLM2 int8 0.79.
DIRECT_BASE_MEMORY = 500_000_000
DIRECT_PEAK_PER_FILE_BYTE = 3.2
DIRECT_PLAIN_PEAK_PER_FILE_BYTE = 2.2
DIRECT_PLAIN_TYPES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q8_0"})
DIRECT_CALIBRATION_PER_FILE_BYTE = 0.3
DIRECT_GRAPH_PER_FILE_BYTE = 1.15
# A GGUF's size per weight when the file is not at hand (Q4_K_M: Qwen2.5-Coder-1.5B's is 0.63).
TYPICAL_GGUF_BYTES_PER_WEIGHT = 0.63


# Seconds per billion weights of a conversion on the bounded path, measured on this project's
# 2-core machine with the 6.7B-shaped synthetic Q4_0 GGUF (README, "Memory a conversion needs"):
# 544 s data-free (int4-sym-npu-cw), 1,181 s data-aware (int4-asym-mixed, its calibration runs the
# graph). More cores take less; the float path was not timed.
BOUNDED_SECONDS_PER_BILLION = 81.0
BOUNDED_DATA_AWARE_SECONDS_PER_BILLION = 176.0


@dataclass(frozen=True)
class ConversionNeeds:
    """What converting `weights` weights with one recipe needs: resident memory and disk at the
    peak, and the size of what stays in the store."""

    weights: int
    peak_memory: int
    disk: int
    output: int
    seconds: float | None = None  # measured here for the bounded path only (see above)


@dataclass(frozen=True)
class SystemMemory:
    total: int
    available: int


MemoryProbe = Callable[[], SystemMemory]


def system_memory() -> SystemMemory:
    """This machine's RAM and what is available now (free plus reclaimable caches)."""
    memory = psutil.virtual_memory()
    return SystemMemory(total=int(memory.total), available=int(memory.available))


def conversion_needs(
    weights: int,
    source_format: SourceFormat,
    recipe: Recipe,
    source_bytes: int = 0,
    tensor_types: frozenset[str] = frozenset(),
) -> ConversionNeeds:
    """The estimate for converting a source of `weights` weights in `source_format` with `recipe`
    (whose `path` says how it runs); a pre-converted IR (`source_bytes` of it) is only copied and
    hashed, a GGUF on the bounded path is costed by its size (`source_bytes`) and its
    `tensor_types` (unknown: the costlier kind)."""
    if source_format == "ir":
        return ConversionNeeds(weights, BASE_MEMORY, source_bytes + DISK_SLACK_BYTES, source_bytes)
    output = int(weights * recipe.bytes_per_weight)
    if recipe.path == "gguf-direct":
        file_bytes = source_bytes or int(weights * TYPICAL_GGUF_BYTES_PER_WEIGHT)
        plain = bool(tensor_types) and tensor_types <= DIRECT_PLAIN_TYPES
        per_byte = DIRECT_PLAIN_PEAK_PER_FILE_BYTE if plain else DIRECT_PEAK_PER_FILE_BYTE
        per_byte += DIRECT_CALIBRATION_PER_FILE_BYTE if recipe.data_aware else 0
        per_billion = (
            BOUNDED_DATA_AWARE_SECONDS_PER_BILLION if recipe.data_aware else BOUNDED_SECONDS_PER_BILLION
        )
        return ConversionNeeds(
            weights=weights,
            peak_memory=DIRECT_BASE_MEMORY + int(file_bytes * per_byte),
            disk=int(file_bytes * DIRECT_GRAPH_PER_FILE_BYTE) + output + DISK_SLACK_BYTES,
            output=output,
            seconds=weights / 1e9 * per_billion,
        )
    per_weight = FLOAT_PEAK_BYTES
    if recipe.calibration is not None:
        per_weight += CALIBRATION_PEAK_EXTRA_BYTES
    disk_per_weight = FLOAT_EXPORT_BYTES + recipe.bytes_per_weight
    if source_format == "gguf":
        disk_per_weight += GGUF_DEQUANT_BYTES
    base = BASE_MEMORY + (GGUF_BASE_MEMORY if source_format == "gguf" else 0)
    return ConversionNeeds(
        weights=weights,
        peak_memory=base + int(weights * per_weight),
        disk=int(weights * disk_per_weight) + DISK_SLACK_BYTES,
        output=output,
    )


def memory_shortfall(needs: ConversionNeeds, memory: SystemMemory) -> str | None:
    """Why the conversion cannot fit in memory now, or None when it fits."""
    if needs.peak_memory <= memory.available:
        return None
    where = (
        "more than this machine has"
        if needs.peak_memory > memory.total
        else "more than is available now (close other programs, or convert on a bigger machine)"
    )
    return (
        f"it needs about {human_bytes(needs.peak_memory)} of memory at its peak, {where}: "
        f"{human_bytes(memory.total)} in all, {human_bytes(memory.available)} available"
    )


def require_memory(needs: ConversionNeeds, memory: SystemMemory, what: str, alternative: str = "") -> None:
    """Raise ConversionMemoryError, with both numbers (and `alternative`, a way out), when `needs`
    does not fit in `memory`."""
    shortfall = memory_shortfall(needs, memory)
    if shortfall is not None:
        raise ConversionMemoryError(f"{what}: {shortfall}{alternative}")
