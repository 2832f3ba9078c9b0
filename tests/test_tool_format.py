"""Tool calls' text format (parsing, the held-back stream, the prompt for families with no tool
format) and the checks a request's tools and schemas pass before any device."""

import json
from pathlib import Path

import pytest

from npu_engine.backends.remote import OllamaBackend
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import GenerationError, UserInputError
from npu_engine.json_schema import check_schema
from npu_engine.manifest import Manifest
from npu_engine.request import GenerateRequest
from npu_engine.response_format import ResponseFormat
from npu_engine.scheduler import OLLAMA
from npu_engine.store import ModelStore
from npu_engine.targets import RemoteTarget
from npu_engine.tool_format import HeldText, chat_messages, constraint, parse
from npu_engine.tools import Tool
from tests.fake_ollama import fake_ollama

WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", "The time now", {"type": "object", "properties": {}})


def test_parse_takes_content_before_the_first_call_and_every_call() -> None:
    text = (
        'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    content, calls = parse(text, [WEATHER, TIME])
    assert content == "Let me look."
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    ],
)
def test_parse_takes_an_answer_that_is_a_bare_call(text: str) -> None:
    content, calls = parse(text, [WEATHER])
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    heard: list[str] = []
    sink = HeldText(heard.append)
    for at in range(0, len(text), 5):
        sink(text[at : at + 5])
    sink.release(calls)
    assert heard == []


@pytest.mark.parametrize(
    "text",
    [
        "No call here.",
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n``` and more',
        '{"name": "get_weather", "arguments": {"town": "Paris"}}',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',  # cut by max_tokens
        '<tool_call>\n{"name": "delete_all", "arguments": {}}\n</tool_call>',  # not declared
        '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Paris"}}\n</tool_call>',  # breaks schema
    ],
)
def test_parse_leaves_text_that_is_no_valid_call(text: str) -> None:
    assert parse(text, [WEATHER]) == (text, ())


def test_held_text_streams_only_the_content() -> None:
    heard: list[str] = []
    sink = HeldText(heard.append)
    for piece in ["Sure", ". <", "tool", "_call>\n{", '"name": "get_time"', "}\n</tool_call>"]:
        sink(piece)
    sink.release(parse('Sure. <tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>', [TIME])[1])
    assert "".join(heard) == "Sure. "
    plain: list[str] = []
    other = HeldText(plain.append)
    for piece in ["a <", "b> and <tool"]:
        other(piece)
    other.release(())
    assert "".join(plain) == "a <b> and <tool"
    code: list[str] = []
    block = HeldText(code.append)
    for piece in ["``", "`py", "thon\nx = 1\n```"]:
        block(piece)
    assert "".join(code) == "```python\nx = 1\n```"  # streamed before the end: no call starts so


def test_prompt_format_declares_tools_and_renders_earlier_calls_as_text() -> None:
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ],
        },
        {"role": "tool", "content": '{"sky": "clear"}', "tool_call_id": "call_1"},
    ]
    messages, declared = chat_messages(history, [WEATHER], "prompt")
    assert declared == []
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("Be brief.\n\n# Tools")
    assert '"name": "get_weather"' in messages[0]["content"]
    assert messages[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert messages[3] == {"role": "user", "content": '<tool_response>\n{"sky": "clear"}\n</tool_response>'}
    templated, tools = chat_messages(history, [WEATHER], "template")
    assert tools[0]["function"]["name"] == "get_weather" and templated[3]["role"] == "tool"


def test_tool_choice_sets_what_structured_output_enforces() -> None:
    assert constraint([WEATHER], "none", True) is None and constraint([], "auto", True) is None
    auto = constraint([WEATHER, TIME], "auto", True)
    assert auto is not None and not auto.required and not auto.single and len(auto.tools) == 2
    named = constraint([WEATHER, TIME], "get_time", False)
    assert named is not None and named.required and named.single and named.tools == (TIME,)


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (GenerateRequest.of("hi"), None),
        (
            GenerateRequest(
                ({"role": "user", "content": "hi"},), tools=(Tool("bad name!", "", {"type": "object"}),)
            ),
            "tools[0].function.name",
        ),
        (GenerateRequest(({"role": "user", "content": "hi"},), tools=(WEATHER, WEATHER)), "declared twice"),
        (
            GenerateRequest(({"role": "user", "content": "hi"},), tools=(WEATHER,), tool_choice="nope"),
            "tool_choice",
        ),
        (
            GenerateRequest(({"role": "user", "content": "hi"},), tool_choice="required"),
            "tool_choice 'required'",
        ),
        (
            GenerateRequest(
                ({"role": "user", "content": "hi"},),
                tools=(Tool("f", "", {"type": "object", "properties": {"a": {"type": "strnig"}}}),),
            ),
            "tools[0].function.parameters.properties.a.type is not a valid JSON schema",
        ),
        (
            GenerateRequest(
                ({"role": "user", "content": "hi"},),
                response_format=ResponseFormat("json_schema", {"type": "object", "if": {}, "then": {}}),
            ),
            "response_format.json_schema.schema uses 'if'",
        ),
        (
            GenerateRequest(
                ({"role": "user", "content": "hi"},),
                tools=(WEATHER,),
                response_format=ResponseFormat("json_object"),
            ),
            "response_format cannot be combined with tools",
        ),
    ],
)
def test_validate_names_the_field(request_: GenerateRequest, named: str | None) -> None:
    if named is None:
        request_.validate()
        return
    with pytest.raises(
        UserInputError, match=named.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        request_.validate()


@pytest.mark.parametrize(
    "keyword",
    [
        {"multipleOf": 3},
        {"not": {"type": "string"}},
        {"allOf": [{"type": "integer"}, {"minimum": 1}]},
        {"if": {"minimum": 1}, "then": {"maximum": 3}},
        {"uniqueItems": True},
        {"contains": {"const": 1}},
        {"$ref": "https://example.com/schema.json"},
    ],
)
def test_a_keyword_constrained_decoding_cannot_enforce_is_refused(keyword: dict[str, object]) -> None:
    name = next(iter(keyword))
    with pytest.raises(UserInputError, match="format.properties.x"):
        check_schema({"type": "object", "properties": {"x": keyword}}, "format")
    assert name


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "pattern": "^(?=a)a+$"}, "format.properties.x.pattern uses '(?='"),
        ({"type": "string", "pattern": "(ab"}, "format.properties.x.pattern is not a regular expression"),
        ({"$ref": "#/$defs/missing"}, "format has a $ref that does not resolve"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "format.properties.x.minimum is above"),
        ({"enum": []}, "format.properties.x.enum is empty"),
        ({"$id": "http://127.0.0.1:9/elsewhere"}, "format.properties.x uses '$id'"),
    ],
)
def test_a_schema_the_grammar_would_fail_on_is_refused_first(schema: dict[str, object], named: str) -> None:
    """xgrammar compiles a schema only once generation starts, and with continuous batching its
    failure fails every request decoding beside it: these never reach it."""
    with pytest.raises(UserInputError) as refused:
        check_schema({"type": "object", "properties": {"x": schema}}, "format")
    assert str(refused.value).startswith(named)


def test_a_remote_meta_schema_is_never_fetched() -> None:
    # Port 9 (discard) on loopback: a fetch would fail; the root's $schema is read as 2020-12.
    check_schema({"$schema": "http://127.0.0.1:9/meta", "type": "object"}, "format")


def test_remote_fallbacks_refuse_tools_and_response_formats_saying_why(tmp_path: Path) -> None:
    """No local model: the Ollama fallback would answer in its own format, unchecked; it is skipped."""
    with fake_ollama({"smollm2:135m": "def add(a, b): return a + b"}) as (url, seen):
        remote = RemoteTarget(OLLAMA, OllamaBackend(url), lambda model: "smollm2:135m")
        engine = Engine.from_settings(
            store=ModelStore(tmp_path), profile="tiny", inventory=discover(), remotes=[remote]
        )
        for request in (
            GenerateRequest(({"role": "user", "content": "hi"},), tools=(WEATHER,)),
            GenerateRequest(
                ({"role": "user", "content": "hi"},), response_format=ResponseFormat("json_object")
            ),
        ):
            with pytest.raises(GenerationError, match="ollama: the ollama fallback does not take tools"):
                engine.generate(request)
        assert not seen  # nothing was sent
        assert engine.generate("hi", tier="code").text == "def add(a, b): return a + b"


def test_the_python_api_takes_tools_by_keyword(cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    engine = Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())
    result = engine.generate(
        "What is the weather in Paris?",
        tier="code",
        max_new_tokens=40,
        tools=[WEATHER],
        tool_choice="get_weather",
    )
    [call] = result.tool_calls
    assert result.finish_reason == "tool_calls" and call.name == "get_weather" and result.text == ""
    assert isinstance(call.arguments["city"], str)


def test_continuous_batching_honours_tools_and_response_formats(
    cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), continuous_batching=True
    )
    called = engine.generate(
        "Weather in Rome?", tier="code", max_new_tokens=40, tools=[WEATHER], tool_choice="required"
    )
    assert [c.name for c in called.tool_calls] == ["get_weather"] and called.finish_reason == "tool_calls"
    shape = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    answered = engine.generate(
        'Answer with {"ok": true}.',
        tier="code",
        max_new_tokens=30,
        response_format=ResponseFormat("json_schema", shape),
    )
    assert json.loads(answered.text) in ({"ok": True}, {"ok": False})
    assert engine.loaded()[0][0] == smollm_cpu.name
