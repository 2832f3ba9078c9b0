"""Structured output: the shape an answer must take (OpenAI `response_format`, Ollama `format`)."""

from dataclasses import dataclass
from typing import Any, Literal

from npu_engine.errors import UserInputError
from npu_engine.json_schema import check_schema


@dataclass(frozen=True)
class ResponseFormat:
    """`json_object`: any JSON object; `json_schema`: JSON that validates against `schema`
    (`name` and `strict` as the client sent them). `field` names it in errors as the client's
    protocol does (`response_format`, Ollama's `format`)."""

    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = ""
    strict: bool = False
    field: str = "response_format"


def validate_response_format(shape: ResponseFormat) -> None:
    """Raise UserInputError naming the field when the schema is missing, malformed or uses a
    keyword constrained decoding cannot enforce."""
    if shape.kind == "json_object":
        return
    if shape.kind != "json_schema":
        raise UserInputError(f"{shape.field}.type must be json_object or json_schema")
    where = f"{shape.field}.json_schema.schema" if shape.field == "response_format" else shape.field
    if shape.schema is None:
        raise UserInputError(f"{where} is required for json_schema")
    check_schema(shape.schema, where)
