"""The engine's Python API: `Engine().generate(...)` answers from the best device holding the tier's model."""

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from npu_engine.catalog import Catalog, load_catalog
from npu_engine.devices import Device, DeviceKind, discover
from npu_engine.errors import ModelNotFoundError, UserInputError
from npu_engine.manifest import Manifest
from npu_engine.settings import engine_home
from npu_engine.store import ModelStore

Message = dict[str, str]


class Pipeline(Protocol):
    load_seconds: float

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str],
        seed: int | None,
    ) -> Any: ...


@dataclass(frozen=True)
class GenerationMetrics:
    """OpenVINO's measurements of one call; times in milliseconds, load in seconds (0 when already loaded)."""

    ttft_ms: float
    tpot_ms: float
    tokens_per_second: float
    input_tokens: int
    output_tokens: int
    load_seconds: float


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str
    tier: str
    model: str
    device: str
    metrics: GenerationMetrics


@dataclass(frozen=True)
class Placement:
    manifest: Manifest
    device: Device


class Engine:
    """Serves generate calls for the tiers of a catalog profile from the models in the store.

    Collaborators are arguments: the store, the catalog, the devices (discovered when None) and the
    pipeline factory (OpenVINO GenAI when None). `emulate_npu` runs NPU placements through NPUW on
    the CPU, for machines without an NPU.
    """

    def __init__(
        self,
        store: ModelStore | None = None,
        catalog: Catalog | None = None,
        profile: str = "embedded",
        devices: Sequence[Device] | None = None,
        pipeline_factory: Callable[[Any], Pipeline] | None = None,
        emulate_npu: bool = False,
    ) -> None:
        self.store = store or ModelStore(engine_home())
        self.catalog = catalog or load_catalog()
        self.profile = self.catalog.profile(profile)
        self.devices = list(devices) if devices is not None else discover()
        if emulate_npu and not any(device.kind == "npu" for device in self.devices):
            cpu = next(device for device in self.devices if device.kind == "cpu")
            self.devices.insert(
                0, Device("NPU", "npu", f"NPU emulated on {cpu.full_name}", cpu.memory_bytes, True)
            )
        self.emulate_npu = emulate_npu
        self._factory = pipeline_factory
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def place(self, tier: str) -> Placement:
        """The device and converted model that serve `tier`: the first device, in NPU, GPU, CPU order,
        for which the store holds the tier's model converted with a recipe valid there."""
        model = self.profile.tier(tier).model
        manifests = [manifest for manifest in self.store.manifests() if manifest.model == model]
        if not manifests:
            raise ModelNotFoundError(
                f"tier {tier!r} needs model {model!r}, which is not converted (run: npu-convert tier {tier} "
                f"--profile {self.profile.name})"
            )
        for device in self.devices:
            fitting = [m for m in manifests if device.kind in m.recipe.devices]
            if fitting:
                fitting.sort(key=lambda m: m.device != device.kind)
                return Placement(fitting[0], device)
        raise ModelNotFoundError(f"no device here can run the converted models of tier {tier!r}")

    def generate(
        self,
        prompt: str | Sequence[Message],
        *,
        tier: str = "code",
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> GenerationResult:
        """Answer a prompt or chat messages with the tier's model; greedy unless temperature > 0."""
        if max_new_tokens < 1:
            raise UserInputError("max_new_tokens must be at least 1")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        placement = self.place(tier)
        pipeline, load_seconds, lock = self._pipeline(placement)
        with lock:
            raw = pipeline.generate(
                messages,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                seed=seed,
            )
        return GenerationResult(
            text=raw.text,
            finish_reason="length" if raw.output_tokens >= max_new_tokens else "stop",
            tier=tier,
            model=placement.manifest.name,
            device=placement.device.name + (" (emulated on CPU)" if self._emulated(placement) else ""),
            metrics=GenerationMetrics(
                ttft_ms=raw.ttft_ms,
                tpot_ms=raw.tpot_ms,
                tokens_per_second=raw.tokens_per_second,
                input_tokens=raw.input_tokens,
                output_tokens=raw.output_tokens,
                load_seconds=load_seconds,
            ),
        )

    def _emulated(self, placement: Placement) -> bool:
        return self.emulate_npu and placement.device.kind == "npu"

    def _pipeline(self, placement: Placement) -> tuple[Pipeline, float, threading.Lock]:
        from npu_engine.backends.openvino_genai import OpenVinoPipelineFactory, PipelineSpec

        key = (placement.manifest.name, placement.device.name)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._pipelines:
                return self._pipelines[key], 0.0, lock
            spec = PipelineSpec(
                model_path=self.store.path(placement.manifest.name),
                device=placement.device.name,
                cache_dir=self.store.cache_dir,
                emulate_npu=self._emulated(placement),
            )
            factory = self._factory or OpenVinoPipelineFactory()
            pipeline = factory(spec)
            self._pipelines[key] = pipeline
            return pipeline, pipeline.load_seconds, lock


def device_kind(name: str) -> DeviceKind:
    """`GPU.1` -> `gpu`."""
    kind = name.split(".")[0].lower()
    if kind not in ("npu", "gpu", "cpu"):
        raise UserInputError(f"unknown device {name!r} (NPU, GPU or CPU)")
    return kind  # type: ignore[return-value]
