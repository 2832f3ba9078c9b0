"""`npu-bench tune`: the CPU runtime settings measured, not assumed.

For each converted model a profile runs on the CPU: OpenVINO's plugin settings (performance hint,
threads, pinning, dynamic-quantization group size, KV-cache precision) one at a time on top of the
best so far; then how far speculative decoding (draft tokens or a confidence threshold) and prompt
lookup (tokens, n-gram) guess; then llama.cpp's threads on the model's source GGUF. Every trial
decodes the same prompts greedily; a setting is kept only when it answers every prompt exactly as
the defaults did and is faster by more than KEEP_MARGIN, and the CPU settings chosen are measured
once more against the defaults once more before they are kept. What is kept goes into the device
profile, which the engine reads (see PipelineLoader).

Trials open their pipelines with no compiled-model cache, so that no setting leaves a blob behind.
"""

import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from npu_engine.backends.pipeline_spec import (
    Backend,
    CpuSettings,
    DecodingMode,
    LlamaCppSpec,
    PipelineSpec,
    Speculation,
)
from npu_engine.bench import BenchPrompt
from npu_engine.catalog import Catalog, Profile
from npu_engine.demands import manifest_for
from npu_engine.device_profile import DeviceProfile, TunedSettings, read_profile, write_profile
from npu_engine.errors import NpuEngineError, presentable
from npu_engine.generation import GenerationMetrics, RawGeneration, SamplingOptions
from npu_engine.gguf_source import source_gguf_path
from npu_engine.machine import cpu_threads
from npu_engine.manifest import Manifest
from npu_engine.recipes import RecipeBook
from npu_engine.store import ModelStore

KEEP_MARGIN = 0.05  # faster by more than this (tokens/s), twice, or the default stays
TUNE_CONTEXT = 4096


Opener = Callable[[PipelineSpec | LlamaCppSpec], Any]


@dataclass(frozen=True)
class Trial:
    """One setting measured on one model: decode speed over the prompts (their tokens after the
    first over their decode time), mean first-token time, and how many answers were the same text
    as the defaults'; `error` when the runtime refused the setting."""

    model: str
    backend: Backend
    mode: DecodingMode
    setting: str
    tokens_per_second: float = 0.0
    ttft_ms: float = 0.0
    identical: int = 0
    prompts: int = 0
    kept: bool = False
    error: str | None = None

    @property
    def answers_as_defaults(self) -> bool:
        return self.error is None and self.identical == self.prompts


@dataclass(frozen=True)
class TuneResult:
    trials: tuple[Trial, ...]
    tuned: tuple[TunedSettings, ...]


def cpu_candidates(threads: int) -> Iterator[tuple[str, list[CpuSettings]]]:
    """Per OpenVINO CPU setting, the values tried besides the plugin's default."""
    yield "hint", [CpuSettings(hint="LATENCY"), CpuSettings(hint="THROUGHPUT")]
    fewer = sorted({threads // 2, threads - 1} - {0, threads})
    yield "threads", [CpuSettings(threads=n) for n in fewer]
    yield "pinning", [CpuSettings(pinning=False), CpuSettings(pinning=True)]
    yield "quantization_group", [CpuSettings(quantization_group=g) for g in (0, 64, 128, 256)]
    yield "kv_precision", [CpuSettings(kv_precision="f16"), CpuSettings(kv_precision="bf16")]


SPECULATIVE = (
    Speculation(draft_tokens=3),
    Speculation(draft_tokens=8),
    Speculation(confidence=0.4),
)
LOOKUP = (
    Speculation(ngram=2),
    Speculation(ngram=4),
    Speculation(lookup_tokens=3),
    Speculation(lookup_tokens=8),
)


def tune(
    profile: Profile,
    catalog: Catalog,
    store: ModelStore,
    recipes: RecipeBook,
    prompts: Sequence[BenchPrompt],
    opener: Opener,
    say: Callable[[str], None],
    *,
    max_new_tokens: int = 64,
    threads: int | None = None,
) -> TuneResult:
    """Tune every model the profile's tiers run on the CPU, each once (speculation with the draft
    model of a tier that has one). Models not converted for the CPU are said and skipped."""
    threads = threads or cpu_threads()
    options = SamplingOptions(max_new_tokens=max_new_tokens)
    manifests = store.manifests()
    trials: list[Trial] = []
    tuned: list[TunedSettings] = []
    models: dict[str, tuple[Manifest, str | None]] = {}  # each model once, with a tier's draft
    for name, tier in profile.tiers.items():
        if catalog.model(tier.model).family.embedding:
            continue
        manifest = manifest_for(manifests, tier.model, "cpu", recipes)
        if manifest is None:
            say(f"tune: tier {name} ({tier.model}) is not converted for the CPU; skipped")
            continue
        drafted = models.get(manifest.name, (manifest, None))[1]
        models[manifest.name] = (manifest, drafted or tier.draft)
    for manifest, draft_model in models.values():
        draft = manifest_for(manifests, draft_model, "cpu", recipes) if draft_model else None
        gguf = source_gguf_path(manifest, catalog, store.root)
        if gguf is not None and not (gguf.is_file() and store.source_matches(gguf, manifest.source.digest)):
            gguf = None
        model = _ModelTune(store, manifest, draft, prompts, options, opener, say)
        tuned.append(model.run(threads, gguf))
        trials.extend(model.trials)
    return TuneResult(tuple(trials), tuple(tuned))


class _ModelTune:
    """The trials of one converted model, in order, against its defaults' answers."""

    def __init__(
        self,
        store: ModelStore,
        manifest: Manifest,
        draft: Manifest | None,
        prompts: Sequence[BenchPrompt],
        options: SamplingOptions,
        opener: Opener,
        say: Callable[[str], None],
    ) -> None:
        self.manifest = manifest
        self.path = store.checked_path(manifest)
        self.draft_path = store.checked_path(draft) if draft else None
        self.prompts = prompts
        self.options = options
        self.opener = opener
        self.say = say
        self.trials: list[Trial] = []

    def run(self, threads: int, gguf: Path | None) -> TunedSettings:
        base = PipelineSpec(self.path, "CPU")
        reference = self._measure(base, "openvino", "defaults", None)
        if reference.trial.error is not None:
            return TunedSettings(self.manifest.name, "CPU", why="the defaults failed to run")
        why = [f"plain {reference.trial.tokens_per_second:.1f} tokens/s with the defaults"]
        best, best_trial = CpuSettings(), reference.trial
        for _dimension, values in cpu_candidates(threads):
            for value in values:
                cpu = _merged(best, value)
                got = self._measure(replace(base, cpu=cpu), "openvino", cpu.describe(), reference.texts)
                if got.answers_as_defaults and got.tokens_per_second > best_trial.tokens_per_second * (
                    1 + KEEP_MARGIN
                ):
                    best, best_trial = cpu, got.trial
        if best != CpuSettings():
            best, said = self._confirmed(base, best, reference.texts)
            why.append(said)
        guess = Speculation()
        if self.draft_path is not None:
            spec = replace(base, cpu=best, mode="speculative", draft_path=self.draft_path)
            guess, said = self._guesses(spec, "speculative", SPECULATIVE, guess, reference.texts)
            why.append(said)
        spec = replace(base, cpu=best, mode="prompt_lookup")
        guess, said = self._guesses(spec, "prompt_lookup", LOOKUP, guess, reference.texts)
        why.append(said)
        llama_threads = self._llama_threads(gguf, threads) if gguf is not None else None
        if llama_threads is not None:
            why.append(f"llama.cpp on {llama_threads} threads")
        return TunedSettings(self.manifest.name, "CPU", best, guess, llama_threads, "; ".join(why))

    def _confirmed(
        self, base: PipelineSpec, best: CpuSettings, reference: tuple[str, ...]
    ) -> tuple[CpuSettings, str]:
        """`best` measured once more right after the defaults once more: kept only if it is still
        faster by KEEP_MARGIN (one trial's speed moves by 10-15% on a shared machine)."""
        again = self._measure(base, "openvino", "defaults (again)", reference)
        confirm = self._measure(replace(base, cpu=best), "openvino", f"{best.describe()} (again)", reference)
        if confirm.answers_as_defaults and confirm.tokens_per_second > again.tokens_per_second * (
            1 + KEEP_MARGIN
        ):
            self._keep(confirm.trial)
            return (
                best,
                f"{best.describe()}: {confirm.tokens_per_second:.1f} vs {again.tokens_per_second:.1f}",
            )
        return CpuSettings(), f"{best.describe()} did not hold when measured again; defaults stay"

    def _guesses(
        self,
        spec: PipelineSpec,
        mode: DecodingMode,
        candidates: Sequence[Speculation],
        kept: Speculation,
        reference: tuple[str, ...],
    ) -> tuple[Speculation, str]:
        """The fastest of the defaults and `candidates` for `mode` that answers as plain decoding
        did; `kept` carries what the other guessing mode chose."""
        fields = ("draft_tokens", "confidence") if mode == "speculative" else ("lookup_tokens", "ngram")
        default = self._measure(replace(spec, speculation=kept), "openvino", "defaults", reference)
        best, best_trial = kept, default.trial
        for candidate in candidates:
            guess = replace(kept, **{f: getattr(candidate, f) for f in fields})
            got = self._measure(replace(spec, speculation=guess), "openvino", guess.describe(mode), reference)
            faster = got.tokens_per_second > best_trial.tokens_per_second * (1 + KEEP_MARGIN)
            if got.answers_as_defaults and (faster or not best_trial.answers_as_defaults):
                best, best_trial = guess, got.trial
        if not best_trial.answers_as_defaults:
            return kept, f"{mode}: no setting answered as plain decoding did; defaults stay"
        if best != kept:
            self._keep(best_trial)
        return best, f"{mode} {best.describe(mode)}: {best_trial.tokens_per_second:.1f}"

    def _llama_threads(self, gguf: Path, threads: int) -> int | None:
        """llama.cpp's threads when fewer than all measured faster with the same answers, else None."""
        base = LlamaCppSpec(gguf, self.path, TUNE_CONTEXT, threads, reuse_prefix=False)
        reference = self._measure(base, "llama.cpp", f"{threads} threads", None)
        best: MeasuredTrial | None = None
        for n in sorted({threads // 2, threads - 1} - {0, threads}):
            got = self._measure(replace(base, threads=n), "llama.cpp", f"{n} threads", reference.texts)
            bar = (best or reference).trial.tokens_per_second * (1 + KEEP_MARGIN)
            if got.answers_as_defaults and got.tokens_per_second > bar:
                best = got
        if best is None:
            return None
        self._keep(best.trial)
        return int(best.trial.setting.split()[0])

    def _keep(self, trial: Trial) -> None:
        self.trials[self.trials.index(trial)] = replace(trial, kept=True)

    def _measure(
        self,
        spec: PipelineSpec | LlamaCppSpec,
        backend: Backend,
        setting: str,
        reference: tuple[str, ...] | None,
    ) -> "MeasuredTrial":
        mode: DecodingMode = spec.mode if isinstance(spec, PipelineSpec) else "plain"
        trial = Trial(self.manifest.name, backend, mode, setting, prompts=len(self.prompts))
        try:
            pipeline = self.opener(spec)
        except (RuntimeError, ValueError, TypeError, NpuEngineError) as error:
            trial = replace(trial, error=presentable(error))
            self.say(f"tune {self.manifest.name} {backend} {mode} {setting}: refused ({trial.error})")
            self.trials.append(trial)
            return MeasuredTrial(trial, ())
        try:
            asked = [[{"role": "user", "content": p.prompt}] for p in self.prompts]
            pipeline.generate(asked[0], replace(self.options, max_new_tokens=8))  # warm-up
            answers: list[RawGeneration] = [pipeline.generate(messages, self.options) for messages in asked]
        finally:
            close = getattr(pipeline, "close", None)
            if close is not None:
                close()
            del pipeline
            gc.collect()
        texts = tuple(a.text for a in answers)
        trial = replace(
            trial,
            tokens_per_second=_decode_rate([a.metrics for a in answers]),
            ttft_ms=sum(a.metrics.ttft_ms for a in answers) / len(answers),
            identical=len(texts)
            if reference is None
            else sum(a == b for a, b in zip(texts, reference, strict=True)),
        )
        self.say(
            f"tune {self.manifest.name} {backend} {mode} {setting}: {trial.tokens_per_second:.1f} tokens/s, "
            f"{trial.identical}/{trial.prompts} answers as the defaults'"
        )
        self.trials.append(trial)
        return MeasuredTrial(trial, texts)


@dataclass(frozen=True)
class MeasuredTrial:
    trial: Trial
    texts: tuple[str, ...]

    @property
    def answers_as_defaults(self) -> bool:
        return self.trial.answers_as_defaults

    @property
    def tokens_per_second(self) -> float:
        return self.trial.tokens_per_second


def _merged(best: CpuSettings, value: CpuSettings) -> CpuSettings:
    """`best` with the fields `value` sets."""
    changed = {k: v for k, v in vars(value).items() if v is not None}
    return replace(best, **changed)


def _decode_rate(metrics: Sequence[GenerationMetrics]) -> float:
    """Tokens after the first over the time they took, over all answers."""
    tokens = sum(max(m.output_tokens - 1, 0) for m in metrics)
    seconds = sum(m.tpot_ms * max(m.output_tokens - 1, 0) for m in metrics) / 1000
    return tokens / seconds if seconds else 0.0


def tune_table(result: TuneResult) -> str:
    """The trials as a Markdown table, kept settings marked."""
    lines = [
        "| model | backend | mode | setting | decode tokens/s | first token ms | same answers | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in result.trials:
        speed = f"{t.tokens_per_second:.1f}" if t.error is None else f"refused: {t.error}"
        lines.append(
            f"| {t.model} | {t.backend} | {t.mode} | {t.setting} | {speed} | {t.ttft_ms:.0f} "
            f"| {t.identical}/{t.prompts} | {'yes' if t.kept else ''} |"
        )
    return "\n".join(lines)


def keep_tuned(path: Path, machine: str, result: TuneResult) -> DeviceProfile:
    """The device profile at `path` with the tuned settings of `result` in place of those of the
    same models and devices (its measurements kept), written atomically."""
    old = read_profile(path)
    replaced = {(t.model, t.device) for t in result.tuned}
    kept = tuple(t for t in (old.tuned if old else ()) if (t.model, t.device) not in replaced)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    profile = DeviceProfile(
        old.machine if old else machine,
        old.created if old else stamp,
        old.measurements if old else (),
        (*kept, *result.tuned),
    )
    write_profile(path, profile)
    return profile
