"""`npu-bench tools` on SmolLM2: the shipped set loads, every call scored names a declared tool,
and a prompt scores as the rule says (the right tool carrying the expected values, or no call)."""

from npu_engine.bench_tools import ToolPrompt, load_tool_bench, tool_call_rate
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.store import ModelStore


def test_tool_bench_scores_each_prompt(cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    tools, prompts = load_tool_bench()
    assert len(prompts) == 20 and sum(p.expect is not None for p in prompts) == 14
    assert {p.expect for p in prompts if p.expect} <= {t.name for t in tools}
    engine = Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())
    # Whatever it calls, it cannot carry a city that is in no prompt: never a success.
    impossible = ToolPrompt("impossible", prompts[0].prompt, "get_weather", {"city": "no such city anywhere"})
    report = tool_call_rate(engine, "code", tools, [impossible, prompts[-1]], max_new_tokens=32)
    assert report.model == smollm_cpu.name and [o.id for o in report.outcomes] == [
        "impossible",
        prompts[-1].id,
    ]
    assert not report.outcomes[0].ok and report.outcomes[1].ok == (not report.outcomes[1].called)
    for outcome in report.outcomes:
        assert set(outcome.called) <= {t.name for t in tools}
    assert (
        report.rate == sum(o.ok for o in report.outcomes) / 2
        and "| impossible | get_weather |" in report.markdown()
    )
