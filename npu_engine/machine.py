"""What npu-bench records about the machine: its description, its memory read bandwidth (the
physical limit of decoding, which reads every weight once per token) and a process's peak memory."""

import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from npu_engine.devices import GB, Inventory


def cpu_threads() -> int:
    """The threads this process may run on (what OpenVINO's CPU plugin uses, and llama.cpp is given)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_second: float  # the best pass: the physical limit the ceilings use
    median_bytes_per_second: float  # how much of it a typical pass got (shared machines vary)
    buffer_bytes: int
    threads: int

    @property
    def gb_per_second(self) -> float:
        return self.bytes_per_second / GB


def measure_read_bandwidth(
    buffer_bytes: int = GB, threads: int | None = None, repeats: int = 10
) -> Bandwidth:
    """Best of `repeats` parallel reads of a buffer much larger than the caches (numpy releases the
    GIL, so every thread reads its own slice at once)."""
    threads = threads or cpu_threads()
    data = np.ones(buffer_bytes // 8, dtype=np.float64)
    slices = np.array_split(data, threads)
    rates = []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(_read, slices))
            rates.append(data.nbytes / (time.perf_counter() - started))
    return Bandwidth(max(rates), statistics.median(rates), data.nbytes, threads)


def _read(values: "np.ndarray[Any, Any]") -> float:
    # A dot product streams its operand through BLAS: the fastest plain read numpy offers.
    return float(values @ values)


def decode_ceiling(bandwidth: Bandwidth, weight_bytes: int, kv_bytes: int) -> float:
    """Tokens/s if decoding did nothing but read the weights and the KV cache once per token."""
    return bandwidth.bytes_per_second / (weight_bytes + kv_bytes)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_facts(inventory: Inventory) -> dict[str, Any]:
    """The machine a bench ran on, for the results file."""
    cpus = inventory.of_kind("cpu")
    return {
        "description": inventory.description,
        "cpu": cpus[0].full_name if cpus else platform.processor(),
        "cpu_threads": cpu_threads(),
        "memory_gb": round(inventory.memory_bytes / GB, 1),
        "devices": [{"name": d.name, "kind": d.kind, "full_name": d.full_name} for d in inventory.devices],
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: package_version(name)
            for name in ("npu-engine", "openvino", "openvino-genai", "llama_cpp_python")
        },
    }


class PeakMemory:
    """The highest resident set size of this process seen while sampling."""

    def __init__(self) -> None:
        self.peak_bytes = 0


@contextmanager
def peak_memory(interval: float = 0.05) -> Iterator[PeakMemory]:
    """Sample this process's RSS every `interval` seconds for the block; `.peak_bytes` holds the peak."""
    process = psutil.Process()
    peak = PeakMemory()
    done = threading.Event()

    def sample() -> None:
        while True:
            peak.peak_bytes = max(peak.peak_bytes, process.memory_info().rss)
            if done.wait(interval):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak.peak_bytes = max(peak.peak_bytes, process.memory_info().rss)


_DECOMPRESSION = {"Convert", "Subtract", "Multiply", "Reshape", "Unsqueeze"}


def decode_read_bytes(model_xml: Path) -> int:
    """Bytes of weights plain decoding reads per token: every constant of the IR except the tables
    a Gather picks single rows from (the input embedding), found through their decompression ops."""
    import openvino as ov

    model = ov.Core().read_model(str(model_xml))
    total = sum(op.get_byte_size() for op in model.get_ops() if op.get_type_name() == "Constant")
    gathered: dict[str, int] = {}
    for op in model.get_ops():
        if op.get_type_name() != "Gather":
            continue
        stack = [op.input(0).get_source_output().get_node()]
        while stack:
            node = stack.pop()
            if node.get_type_name() == "Constant":
                gathered[node.get_friendly_name()] = node.get_byte_size()
            elif node.get_type_name() in _DECOMPRESSION:
                stack += [i.get_source_output().get_node() for i in node.inputs()]
    return int(total - sum(gathered.values()))
