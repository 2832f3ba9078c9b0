"""Model families in the catalog: what each can do beyond chat, read from models/families.json."""

from npu_engine.catalog import load_catalog


def test_every_catalog_model_names_a_family_with_its_capabilities() -> None:
    catalog = load_catalog()
    qwen = catalog.model("qwen2.5-coder-0.5b-instruct").family
    assert (qwen.name, qwen.tools) == ("qwen2.5-coder", "template")
    assert qwen.capabilities() == ("completion", "tools", "insert")
    assert qwen.infill is not None
    assert qwen.infill.prompt("def f(", "):\n") == "<|fim_prefix|>def f(<|fim_suffix|>):\n<|fim_middle|>"
    assert catalog.model("deepseek-coder-6.7b-instruct").family.infill is not None
    # CodeLlama's FIM tokens exist in every size, but only 7B and 13B were trained to infill.
    assert catalog.model("codellama-13b-instruct").family.infill is not None
    assert catalog.model("codellama-70b-instruct").family.infill is None
    assert "insert" not in catalog.model("codellama-70b-instruct").family.capabilities()
    assert catalog.model("smollm2-135m-instruct").family.infill is None
    assert "thinking" in catalog.model("deepseek-r1-distill-qwen-1.5b").family.capabilities()
