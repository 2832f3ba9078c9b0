"""Tool calling's typed pieces, shared by every edge (OpenAI `tools`, Ollama `tools`, Anthropic
`tools`) and every target: the tools a request declares, how the model may use them, and the calls
an answer makes."""

from dataclasses import dataclass, field
from typing import Any, Literal

# `auto`: the model may call a tool or answer in text; `none`: it answers in text; `required`: it
# must call at least one tool; any other string names the one tool it must call.
ToolChoice = Literal["auto", "none", "required"] | str


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """One call an answer makes: an id the tool's result refers back to, the tool, its arguments
    as a JSON object (already checked against the tool's schema)."""

    id: str
    name: str
    arguments: dict[str, Any]
