"""Anthropic's Messages API on a real server over SmolLM2, driven by the official `anthropic`
client unchanged: messages.create, the stream and its exact event sequence, stop_sequences,
usage, tool_use / tool_result history reaching the prompt, claude-… names, and errors in
Anthropic's shape. Tool calls made by a real coder model are in test_clients_slow.py."""

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.anthropic_messages import chat_messages
from npu_engine.server.anthropic_schemas import MessagesRequest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from tests.test_server import ServerThread

QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def served(engine: Engine) -> Iterator[ServerThread]:
    with ServerThread(create_app(engine, ServerConfig(api_key="s3cret"))) as server:
        yield server


@pytest.fixture(scope="module")
def client(served: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key="s3cret", max_retries=0, timeout=120)


def events_of(served: ServerThread, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The raw server-sent events of a streamed Messages request: (event name, data)."""
    found = []
    with (
        httpx.Client(base_url=served.url, timeout=120) as http,
        http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": "s3cret"}) as reply,
    ):
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == name
                found.append((name, data))
    return found


def test_create_and_stream_with_the_official_client(
    client: anthropic.Anthropic, smollm_cpu: Manifest
) -> None:
    reply = client.messages.create(
        model="code",
        max_tokens=24,
        system="You answer briefly.",
        messages=QUESTION,  # type: ignore[arg-type]
    )
    assert reply.type == "message" and reply.role == "assistant" and reply.model == "code"
    assert reply.content[0].type == "text" and reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.stop_sequence is None
    assert reply.usage.input_tokens > 0 and 0 < reply.usage.output_tokens <= 24
    with client.messages.stream(
        model="code",
        max_tokens=24,
        system=[{"type": "text", "text": "You answer briefly."}],
        messages=QUESTION,  # type: ignore[arg-type]
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == reply.content[0].text  # greedy: the same answer, streamed
    assert final.content[0].text == streamed and final.stop_reason == reply.stop_reason  # type: ignore[union-attr]
    assert final.usage.output_tokens == reply.usage.output_tokens
    assert final.usage.input_tokens == reply.usage.input_tokens
    by_model = client.messages.create(model=smollm_cpu.name, max_tokens=4, messages=QUESTION)  # type: ignore[arg-type]
    assert by_model.content[0].text  # type: ignore[union-attr]


def test_the_stream_is_anthropics_event_sequence(served: ServerThread) -> None:
    events = events_of(served, {"model": "fast", "max_tokens": 12, "stream": True, "messages": QUESTION})
    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert deltas >= 1
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert all(data["delta"]["type"] == "text_delta" and data["index"] == 0 for _, data in events[3:-3])
    final = events[-2][1]
    assert final["delta"]["stop_reason"] in ("end_turn", "max_tokens") and final["usage"]["output_tokens"] > 0


def test_stop_sequences_end_the_answer_and_are_named(
    client: anthropic.Anthropic, served: ServerThread
) -> None:
    whole = client.messages.create(model="code", max_tokens=40, messages=QUESTION).content[0].text  # type: ignore[arg-type, union-attr]
    words = whole.split()
    assert len(words) >= 4, whole
    stop = " " + words[len(words) // 2]  # from the middle of the greedy answer
    cut = whole[: whole.find(stop)]
    stopped = client.messages.create(
        model="code", max_tokens=40, messages=QUESTION, stop_sequences=[stop, "NEVER!"]
    )  # type: ignore[arg-type]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == stop
    assert stopped.content[0].text == cut  # type: ignore[union-attr]
    events = events_of(
        served,
        {"model": "code", "max_tokens": 40, "stream": True, "messages": QUESTION, "stop_sequences": [stop]},
    )
    text = "".join(d["delta"]["text"] for name, d in events if name == "content_block_delta")
    assert text == cut
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}


def test_tool_use_and_tool_result_history_reach_the_prompt(client: anthropic.Anthropic) -> None:
    tools = [
        {
            "name": "read_file",
            "description": "Read a file of the project",
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        }
    ]
    asked = {"role": "user", "content": "What does setup.py say?"}
    called = {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "setup.py"}}
        ],
    }

    def result(text: str) -> dict[str, Any]:
        block = {
            "type": "tool_result",
            "tool_use_id": "toolu_01",
            "content": [{"type": "text", "text": text}],
        }
        return {"role": "user", "content": [block]}

    short = client.messages.create(
        model="code", max_tokens=4, tools=tools, messages=[asked, called, result("ok")]
    )  # type: ignore[arg-type]
    long = client.messages.create(
        model="code",
        max_tokens=4,
        tools=tools,
        messages=[asked, called, result("setup(name='demo') " * 20)],  # type: ignore[arg-type]
    )
    assert long.usage.input_tokens >= short.usage.input_tokens + 60  # the tool's result is in the prompt
    chosen = client.messages.create(
        model="code",
        max_tokens=4,
        tools=tools,
        tool_choice={"type": "none"},
        messages=[asked],  # type: ignore[arg-type]
    )
    assert chosen.stop_reason != "tool_use"


def test_claude_names_fall_back_to_auto_and_errors_have_anthropics_shape(
    client: anthropic.Anthropic, served: ServerThread
) -> None:
    with httpx.Client(base_url=served.url, timeout=120, headers={"x-api-key": "s3cret"}) as http:
        mapped = http.post(
            "/v1/messages", json={"model": "claude-3-5-haiku-20241022", "max_tokens": 4, "messages": QUESTION}
        ).json()
        assert mapped["model"] == "claude-3-5-haiku-20241022" and mapped["npu_engine"]["tier"] in (
            "fast",
            "code",
        )
        assert "claude-3-5-haiku-20241022" in mapped["npu_engine"]["model_asked"]
        # Claude Code asks for 32000: an upper bound, taken as the server's limit (4096 here).
        large = http.post("/v1/messages", json={"model": "fast", "max_tokens": 32000, "messages": QUESTION})
        assert large.status_code == 200 and large.json()["stop_reason"] == "end_turn", large.text
        missing = http.post("/v1/messages", json={"model": "code", "messages": QUESTION})
        assert missing.status_code == 400
        assert missing.json() == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "invalid field 'max_tokens': Field required",
            },
        }
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
        pictured = http.post(
            "/v1/messages",
            json={"model": "code", "max_tokens": 4, "messages": [{"role": "user", "content": [image]}]},
        )
        assert (
            pictured.status_code == 400
            and "messages[0].content[0].type 'image'" in pictured.json()["error"]["message"]
        )
        keyless = httpx.post(f"{served.url}/v1/messages", json={})
        assert keyless.status_code == 401 and keyless.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="gpt-9", max_tokens=4, messages=QUESTION)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="prefilling"):
        client.messages.create(
            model="code",
            max_tokens=4,
            messages=[*QUESTION, {"role": "assistant", "content": "Red,"}],  # type: ignore[arg-type]
        )


def test_a_turns_text_blocks_reach_the_model_as_paragraphs() -> None:
    # Claude Code's shape: a system reminder and the prompt, two text blocks of one user turn.
    body = MessagesRequest.model_validate(
        {
            "model": "code",
            "max_tokens": 8,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "<system-reminder>Be brief.</system-reminder>"},
                        {"type": "text", "text": "Reverse a list in Go."},
                    ],
                }
            ],
        }
    )
    [turn] = chat_messages(body)
    assert turn == {
        "role": "user",
        "content": "<system-reminder>Be brief.</system-reminder>\n\nReverse a list in Go.",
    }
