"""langchain-openai, unchanged, against the server on Qwen2.5-Coder-0.5B: `bind_tools` yields a
tool call with valid arguments, `with_structured_output` a validated pydantic object."""

import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

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
def chat(qwen_served: ServerThread) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{qwen_served.url}/v1", api_key="unused", model="code", temperature=0, max_tokens=80
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
