"""The baselines of an `npu-bench` run, measured on the same weights as the engine: llama.cpp on
each model's source GGUF (throughput and pass@1) and Ollama when one serves the model."""

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from npu_engine.backends.remote import OllamaBackend, ollama_base_url
from npu_engine.baselines import LlamaCppModel, ollama_available, source_gguf
from npu_engine.bench import (
    QualitySummary,
    SpeedSummary,
    chat_answerer,
    measure_baseline,
    measure_quality,
)
from npu_engine.bench_plan import RunPlan
from npu_engine.bench_report import BenchResults
from npu_engine.catalog import Catalog
from npu_engine.coding_tasks import CodingTask
from npu_engine.generation import Message, RawGeneration, SamplingOptions, TextSink
from npu_engine.manifest import Manifest
from npu_engine.settings import ollama_host
from npu_engine.store import ModelStore


def measure_baselines(
    plan: RunPlan,
    catalog: Catalog,
    store: ModelStore,
    used: dict[str, Manifest],
    results: BenchResults,
    say: Callable[[str], None],
) -> None:
    """llama.cpp on each measured model's source GGUF (plain and prompt lookup; it has no draft-model
    mode), and Ollama when one answers with the model."""
    ours = [s for s in results.speed if s.system == "npu-engine" and not s.emulated]
    models = sorted({s.model for s in ours})
    context = max(plan.max_new_tokens + 2048, 4096)
    for name in models:
        manifest = used.get(name)
        gguf = source_gguf(manifest, catalog, store) if manifest else None
        tiers = sorted({s.tier for s in ours if s.model == name})
        if gguf is None:
            results.notes.append(f"llama.cpp baseline skipped for {name}: no GGUF of the same weights here")
            continue
        for mode in ("plain", "prompt_lookup"):
            if mode not in plan.modes:
                continue
            try:
                summary = _llama_speed(plan, gguf, tiers[0], mode, context, say)
            except Exception as error:  # a third-party baseline failing must not end the whole run
                results.notes.append(
                    f"llama.cpp {mode} on {gguf.name} failed: {type(error).__name__}: {error}"
                )
                continue
            results.speed += [replace(summary, tier=tier) for tier in tiers]
        _ollama_baseline(plan, catalog, manifest, tiers, results)


def _llama_speed(
    plan: RunPlan, gguf: Path, tier: str, mode: str, context: int, say: Callable[[str], None]
) -> SpeedSummary:
    llama = LlamaCppModel(gguf, context=context, lookup=mode == "prompt_lookup")
    try:
        say(f"llama.cpp: {gguf.name} ({mode}, {llama.threads} threads)")
        return measure_baseline(
            "llama.cpp",
            llama.generate,
            tier,
            mode,
            gguf.name,
            plan.prompts,
            plan.runs,
            plan.max_new_tokens,
            llama.load_seconds,
        )
    finally:
        llama.close()


def _ollama_baseline(
    plan: RunPlan, catalog: Catalog, manifest: Manifest | None, tiers: list[str], results: BenchResults
) -> None:
    tag = catalog.model(manifest.model).ollama if manifest and manifest.model in catalog.models else None
    if tag is None or "plain" not in plan.modes:
        return
    backend = OllamaBackend(ollama_base_url(ollama_host()))
    missing = ollama_available(backend, tag)
    if missing:
        results.notes.append(f"Ollama baseline skipped: {missing}")
        return

    def generate(
        messages: Sequence[Message], options: SamplingOptions, on_text: TextSink | None = None
    ) -> RawGeneration:
        return backend.generate(tag, messages, options, on_text)

    summary = measure_baseline(
        "ollama", generate, tiers[0], "plain", tag, plan.prompts, plan.runs, plan.max_new_tokens, 0.0
    )
    results.speed += [replace(summary, tier=tier) for tier in tiers]


def llama_quality(gguf: Path, tier: str, tasks: list[CodingTask]) -> QualitySummary:
    """pass@1 of llama.cpp on `gguf` (on the CPU), the baseline beside the engine's."""
    llama = LlamaCppModel(gguf, context=4096)
    try:
        return measure_quality(
            "llama.cpp", tier, gguf.name, llama.quantization, "CPU", chat_answerer(llama.generate), tasks
        )
    finally:
        llama.close()
