"""The JSON schemas constrained decoding can enforce (tool arguments, `response_format`): checked
before any device, so that a schema the runtime would reject or quietly ignore is the caller's
400 naming the keyword, and an answer that passes is one that validates."""

import re
from typing import Any

import jsonschema_rs

from npu_engine.errors import UserInputError

# Keywords OpenVINO GenAI 2026.4's grammar backend (xgrammar) turns into the grammar, as measured
# on real generations (tests/test_tool_format.py lists the refused ones).
ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "$ref",
        "$defs",
        "definitions",
        "minItems",
        "maxItems",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "patternProperties",
        "propertyNames",
    }
)
# Keywords that describe and never constrain. `format` is one in draft 2020-12 (an annotation
# unless a validator opts in), and tools in the wild declare it (Claude Code's `"format": "uri"`):
# taken, not enforced.
ANNOTATIONS = frozenset(
    {
        "format",
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "strict",
    }
)
# Keywords whose value is a schema, a list of schemas or a map of names to schemas.
_ONE = ("items", "additionalProperties", "propertyNames")
_LIST = ("anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions")
MAX_DEPTH = 32
# Regular-expression features the grammar's regex converter refuses (it fails the generation, and
# with continuous batching every request decoding beside it): lookaround, backreferences, named
# and atomic groups, inline flags, anchors other than ^ and $. Non-capturing groups `(?:` pass.
_UNSUPPORTED_REGEX = re.compile(r"\(\?[=!<>Pa-zA-Z]|\\[1-9bBAZzGk]")
_RANGES = (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems"))


def check_schema(schema: Any, field: str) -> None:
    """Raise UserInputError naming `field` when `schema` is no JSON schema (as draft 2020-12 reads
    it), or uses a keyword constrained decoding cannot enforce, or a `$ref` outside the schema."""
    if not isinstance(schema, dict):
        raise UserInputError(f"{field} must be a JSON schema object")
    schema = _local(schema)
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as error:
        where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in error.instance_path)
        raise UserInputError(f"{field}{where} is not a valid JSON schema: {error.message}") from None
    except (jsonschema_rs.ReferencingError, ValueError) as error:
        raise UserInputError(f"{field} is not a valid JSON schema: {error}") from None
    _walk(schema, field, 0)  # `$schema` and `$id` pass at the root only
    try:
        jsonschema_rs.validator_for(schema)  # resolves every $ref
    except (jsonschema_rs.ReferencingError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserInputError(f"{field} has a $ref that does not resolve: {first}") from None


def _local(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without its root `$schema` and `$id`, read as draft 2020-12: a validator would
    fetch an unknown meta-schema or resolve against a remote base, and nothing here goes online."""
    return {key: value for key, value in schema.items() if key not in ("$schema", "$id")}


def _walk(schema: Any, field: str, depth: int) -> None:
    if isinstance(schema, bool):
        return
    if depth > MAX_DEPTH:
        raise UserInputError(f"{field} nests deeper than {MAX_DEPTH} levels")
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key not in ENFORCED:
            raise UserInputError(
                f"{field} uses {key!r}, which constrained decoding cannot enforce "
                f"(supported: {', '.join(sorted(ENFORCED))})"
            )
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            raise UserInputError(f"{field}.$ref must point inside the schema (#/...), not {value!r}")
        if key == "pattern":
            _check_pattern(value, f"{field}.pattern")
        if key == "enum" and not value:
            raise UserInputError(f"{field}.enum is empty: no value could match")
        if key in _ONE and isinstance(value, dict):
            _walk(value, f"{field}.{key}", depth + 1)
        elif key in _LIST:
            for index, item in enumerate(value):
                _walk(item, f"{field}.{key}[{index}]", depth + 1)
        elif key in _MAP:
            for name, item in value.items():
                _walk(item, f"{field}.{key}.{name}", depth + 1)

    for low, high in _RANGES:
        both = isinstance(schema.get(low), int | float) and isinstance(schema.get(high), int | float)
        if both and schema[low] > schema[high]:
            raise UserInputError(f"{field}.{low} is above {field}.{high}: no value could match")


def _check_pattern(pattern: str, field: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise UserInputError(f"{field} is not a regular expression: {error}") from None
    unsupported = _UNSUPPORTED_REGEX.search(pattern)
    if unsupported:
        raise UserInputError(
            f"{field} uses {unsupported.group(0)!r}, which constrained decoding cannot enforce "
            "(no lookaround, backreferences, named or atomic groups, inline flags or \\b)"
        )


def validates(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` validates against `schema` (one checked by check_schema)."""
    try:
        return bool(jsonschema_rs.is_valid(_local(schema), value))
    except (ValueError, jsonschema_rs.ReferencingError):
        return False
