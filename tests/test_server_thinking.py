"""Ollama's `think`: a reasoning model's <think> section split into `thinking` (the splitter on
known texts, streamed in awkward pieces), and the routes giving it apart on a real server whose
catalog marks SmolLM2 as reasoning (the only model here small enough for a fast test)."""

from collections.abc import Iterator
from dataclasses import replace

import ollama
import pytest

from npu_engine.catalog import Catalog
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.server.thinking import ThinkingStream, split_thinking
from npu_engine.store import ModelStore
from tests.conftest import SMOLLM
from tests.test_server import ServerThread

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>\nThe user greets.\n</think>\n\nHello!", ("The user greets.\n", "Hello!")),
        ("The template opened it.</think>Hi", ("The template opened it.", "Hi")),  # no <think> seen
        ("<think>cut off by max_tokens", ("cut off by max_tokens", "")),
        ("</think>Straight to it", ("", "Straight to it")),
        ("a < b and </thin is no tag</think>yes", ("a < b and </thin is no tag", "yes")),
    ],
)
def test_thinking_is_split_from_the_answer(text: str, expected: tuple[str, str]) -> None:
    assert split_thinking(text) == expected
    for size in (1, 2, 3, 5):  # the same split whatever the stream's pieces
        stream = ThinkingStream()
        parts = [stream.feed(text[i : i + size]) for i in range(0, len(text), size)] + [stream.finish()]
        assert ("".join(t for t, _ in parts), "".join(a for _, a in parts)) == expected, size


@pytest.fixture(scope="module")
def reasoning_server(
    cache_store: ModelStore, smollm_cpu: Manifest, catalog: Catalog
) -> Iterator[ServerThread]:
    smollm = catalog.models[SMOLLM]
    reasoning = replace(smollm, family=replace(smollm.family, reasoning=True))
    marked = replace(catalog, models={**catalog.models, SMOLLM: reasoning})
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", catalog=marked, inventory=discover(), remotes=()
    )
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


def test_think_gives_a_reasoning_models_thinking_apart(reasoning_server: ServerThread) -> None:
    client = ollama.Client(host=reasoning_server.url, timeout=120)
    options = {"num_predict": 12}
    plain = client.chat(model="code", messages=HELLO, options=options).message
    assert plain.content and plain.thinking is None  # not asked: the text as the model wrote it
    thought = client.chat(model="code", messages=HELLO, options=options, think=True).message
    assert (thought.thinking or "", thought.content) == split_thinking(plain.content)
    streamed = list(client.chat(model="code", messages=HELLO, options=options, think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in streamed) == (thought.thinking or "")
    assert "".join(p.message.content or "" for p in streamed) == thought.content
    generated = client.generate(model="code", prompt="Say hello.", options=options, think=True)
    whole = client.generate(model="code", prompt="Say hello.", options=options)
    assert (generated.thinking or "", generated.response) == split_thinking(whole.response)
