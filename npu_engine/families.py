"""Model families (`models/families.json`): what a family can do beyond chat (call tools, fill in
the middle, reason before answering) and the tokens it does it with. Every catalog model names its
family; the server's capabilities, the tool prompt and the infill prompt all read it from here."""

from dataclasses import dataclass, replace
from typing import Any, Literal

from npu_engine.data import read_json

ToolFormat = Literal["template", "prompt"]


@dataclass(frozen=True)
class Infill:
    """A family's fill-in-the-middle tokens, in prefix-suffix-middle order, and what ends an infill."""

    prefix: str
    suffix: str
    middle: str
    stop: tuple[str, ...]

    def prompt(self, before: str, after: str) -> str:
        """The raw prompt that asks for the code between `before` and `after`."""
        return f"{self.prefix}{before}{self.suffix}{after}{self.middle}"


@dataclass(frozen=True)
class ModelFamily:
    """`tools`: how tool definitions reach the model (`template`: its own chat template; `prompt`:
    a system message the engine writes), or None when it cannot call tools. `infill`: its FIM
    tokens, or None. `reasoning`: it thinks in <think> before answering. `embedding`: it makes
    vectors of text and never chats (an encoder such as all-MiniLM-L6-v2)."""

    name: str
    description: str
    tools: ToolFormat | None
    infill: Infill | None
    reasoning: bool = False
    embedding: bool = False

    def capabilities(self) -> tuple[str, ...]:
        """Ollama's capability names for a model of this family."""
        if self.embedding:
            return ("embedding",)
        found = ["completion"]
        if self.tools is not None:
            found.append("tools")
        if self.infill is not None:
            found.append("insert")
        if self.reasoning:
            found.append("thinking")
        return tuple(found)

    def without_infill(self) -> "ModelFamily":
        return replace(self, infill=None)


def _family(name: str, raw: dict[str, Any]) -> ModelFamily:
    infill = raw.get("infill")
    return ModelFamily(
        name=name,
        description=raw["description"],
        tools=raw.get("tools"),
        infill=None
        if infill is None
        else Infill(infill["prefix"], infill["suffix"], infill["middle"], tuple(infill["stop"])),
        reasoning=bool(raw.get("reasoning", False)),
        embedding=bool(raw.get("embedding", False)),
    )


def load_families() -> dict[str, ModelFamily]:
    """Read `models/families.json`."""
    raw = read_json("models", "families.json")
    return {name: _family(name, body) for name, body in raw["families"].items()}
