"""The plan of an `npu-bench run` or `speed` (npu_engine.bench_plan): what each value is checked
against, and what a quick run measures. Pure Python: no model is loaded."""

from typing import Any

import pytest

from npu_engine.bench_plan import MODES, PARTS, SLOW_PARTS, run_plan
from npu_engine.catalog import Catalog
from npu_engine.coding_tasks import LANGUAGES
from npu_engine.errors import UserInputError


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tiers": ["huge"]}, "unknown tier 'huge' (known: fast, code, large, review)"),
        ({"profile": "embedded", "tiers": ["review"]}, "profile 'embedded' has no tier 'review'"),
        ({"profile": "nosuch"}, "unknown profile 'nosuch'"),
        ({"modes": ["turbo"]}, "unknown mode 'turbo' (known: plain, speculative, prompt_lookup)"),
        ({"device_kinds": ["tpu"]}, "unknown device kind 'tpu' (known: npu, gpu, cpu)"),
        ({"prompt_kinds": ["poems"]}, "unknown prompt kind 'poems' (known: edit, explain, long, review"),
        ({"runs": 0}, "--runs and --max-new-tokens must be at least 1"),
        ({"max_new_tokens": 0}, "--runs and --max-new-tokens must be at least 1"),
        ({"skip": ["speed"]}, "unknown part 'speed' (known: baselines, concurrency, load, quality, correct)"),
        ({"concurrency": []}, "--concurrency takes positive numbers, e.g. 1,2,4,8"),
        ({"concurrency": [2, 0]}, "--concurrency takes positive numbers, e.g. 1,2,4,8"),
        ({"languages": ["cobol"]}, "unknown language 'cobol' (known: python, javascript, sql, shell)"),
        # The first mistake is the one named.
        ({"tiers": ["huge"], "modes": ["turbo"]}, "unknown tier 'huge'"),
        ({"prompt_kinds": ["poems"], "runs": 0}, "unknown prompt kind 'poems'"),
    ],
)
def test_a_value_the_plan_does_not_know_is_one_user_error(
    catalog: Catalog, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserInputError) as raised:
        run_plan(catalog, **{"profile": "tiny", **values})
    assert str(raised.value).startswith(message)


def test_a_plan_is_every_tier_mode_kind_and_part_unless_told(catalog: Catalog) -> None:
    plan = run_plan(catalog, profile="embedded")
    assert (plan.profile, plan.tiers, plan.modes) == ("embedded", ["fast", "code", "large"], list(MODES))
    assert plan.device_kinds == ["npu", "gpu", "cpu"] and plan.parts == list(PARTS)
    assert (plan.runs, plan.max_new_tokens, plan.concurrency) == (1, 128, [1, 2, 4, 8])
    assert {t.language for t in plan.tasks} == set(LANGUAGES) and len(plan.prompts) > 5
    chosen = run_plan(
        catalog,
        profile="tiny",
        tiers=["code"],
        modes=["speculative"],
        device_kinds=["cpu"],
        prompt_kinds=["edit"],
        skip=["baselines", "load"],
        concurrency=[3],
        languages=["sql"],
    )
    assert (chosen.tiers, chosen.modes, chosen.device_kinds) == (["code"], ["speculative"], ["cpu"])
    assert {p.kind for p in chosen.prompts} == {"edit"} and {t.language for t in chosen.tasks} == {"sql"}
    assert chosen.parts == ["speed", "concurrency", "quality", "correct"] and chosen.concurrency == [3]
    assert run_plan(catalog, profile="tiny", speed_only=True, skip=["nonsense"]).parts == ["speed"]


def test_a_quick_plan_is_small_where_not_told_otherwise(catalog: Catalog) -> None:
    quick = run_plan(catalog, quick=True)
    assert (quick.profile, quick.tiers, quick.modes) == ("tiny", ["code"], ["plain"])
    assert (quick.max_new_tokens, quick.concurrency, quick.concurrency_tokens) == (16, [1, 2], 16)
    assert len(quick.prompts) == 1 and [t.language for t in quick.tasks] == list(LANGUAGES)
    # Minutes even on the tiny profile: a smoke run leaves the slow parts out.
    assert quick.parts == [p for p in PARTS if p not in SLOW_PARTS] and "correct" in SLOW_PARTS
    told = run_plan(catalog, quick=True, max_new_tokens=32, concurrency=[4], modes=["prompt_lookup"])
    assert (told.max_new_tokens, told.concurrency, told.modes) == (32, [4], ["prompt_lookup"])
