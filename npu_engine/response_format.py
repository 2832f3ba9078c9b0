"""Structured output: the shape an answer must take (OpenAI `response_format`, Ollama `format`)."""

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ResponseFormat:
    """`json_object`: any JSON object; `json_schema`: JSON that validates against `schema`
    (`name` and `strict` as the client sent them)."""

    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = ""
    strict: bool = False
