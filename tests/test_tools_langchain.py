"""langchain-openai, unchanged, against the server on Qwen2.5-Coder-0.5B: `bind_tools` yields a
tool call with valid arguments, `with_structured_output` a validated pydantic object."""

from collections.abc import Iterator

import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.test_server import ServerThread

pytestmark = pytest.mark.slow


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(description="The city name")


class Function(BaseModel):
    name: str
    arguments: list[str]
    returns: str


@pytest.fixture(scope="module")
def chat(cache_store: ModelStore, qwen_cpu: Manifest) -> Iterator[ChatOpenAI]:
    engine = Engine.from_settings(
        store=cache_store, profile="embedded", inventory=discover(), remotes=(), measurements=[]
    )
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield ChatOpenAI(
            base_url=f"{server.url}/v1", api_key="unused", model="code", temperature=0, max_tokens=80
        )  # type: ignore[call-arg]


def test_bind_tools(chat: ChatOpenAI) -> None:
    message = chat.bind_tools([GetWeather]).invoke("What is the weather in Paris right now?")
    [call] = message.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "GetWeather" and GetWeather.model_validate(call["args"]).city.lower() == "paris"
    assert call["id"] and call["id"].startswith("call_")


def test_with_structured_output(chat: ChatOpenAI) -> None:
    described = chat.with_structured_output(Function).invoke(
        "Describe the Python function `def add(a, b): return a + b`."
    )
    assert isinstance(described, Function) and described.name == "add" and described.arguments == ["a", "b"]
