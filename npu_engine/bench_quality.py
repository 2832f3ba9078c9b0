"""`npu-bench quality` as a library call: pass@1 of one catalog model converted with several
recipes, each conversion run on the CPU by itself, with llama.cpp on the source GGUF beside them."""

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from npu_engine.baselines import source_gguf
from npu_engine.bench import QUALITY_MAX_NEW_TOKENS, measure_quality, until_code_block
from npu_engine.bench_baselines import llama_quality
from npu_engine.bench_plan import checked
from npu_engine.bench_report import BenchResults, BenchRun, write_results
from npu_engine.bench_run import EngineFactory
from npu_engine.catalog import Catalog
from npu_engine.coding_tasks import LANGUAGES, load_tasks
from npu_engine.devices import Inventory
from npu_engine.errors import UserInputError
from npu_engine.generation import TextSink
from npu_engine.machine import machine_facts
from npu_engine.store import ModelStore


def quality_per_recipe(
    model: str,
    recipes: Sequence[str],
    *,
    languages: Sequence[str] = (),
    baseline: bool = False,
    store: ModelStore,
    catalog: Catalog,
    inventory: Inventory,
    engines: EngineFactory,
    say: Callable[[str], None],
    out: Path | None = None,
) -> BenchRun:
    """pass@1 of the catalog model `model` in each of `recipes` (each already converted into the
    store), greedy on the CPU, on the coding tasks of `languages` (all when empty); with `baseline`,
    llama.cpp on the model's source GGUF too. The results go to `out` (default:
    npu-bench-results/<time>).

    Raises UserInputError for a model the catalog does not know, a recipe not converted or an
    unknown language."""
    started = time.monotonic()
    if model not in catalog.models:
        raise UserInputError(f"unknown model {model!r} (known: {', '.join(sorted(catalog.models))})")
    conversions = {m.recipe.name: m for m in store.manifests() if m.model == model}
    chosen = checked(recipes, list(conversions), "converted recipe")
    tasks = load_tasks(checked(languages, LANGUAGES, "language") or None)
    results = BenchResults(machine_facts(inventory))
    # generate_on plans no tier, so any profile of the catalog serves.
    engine = engines(inventory, profile=next(iter(catalog.profiles)))
    device = engine.device_of_kind("cpu")
    for recipe in chosen:
        name = conversions[recipe].name

        def answer(prompt: str, sink: TextSink, name: str = name) -> str:
            return engine.generate_on(
                name, device, prompt, max_new_tokens=QUALITY_MAX_NEW_TOKENS, on_text=sink
            ).text

        say(f"quality: {len(tasks)} tasks on {name}")
        results.quality.append(
            measure_quality(
                "npu-engine", "-", name, recipe, device, until_code_block(answer), tasks, "openvino"
            )
        )
        engine.unload(name)
    if baseline:
        gguf = source_gguf(next(iter(conversions.values())), catalog, store)
        if gguf is None:
            results.notes.append(f"llama.cpp baseline skipped: no GGUF of {model}'s weights here")
        else:
            results.quality.append(llama_quality(gguf, "-", tasks))
    results.seconds = time.monotonic() - started
    return BenchRun(results, write_results(out, results))
