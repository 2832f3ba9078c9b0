"""Anthropic's Messages onto the engine's request, and its answer back into content blocks: the
system prompt, text, `tool_use` and `tool_result` blocks, `tools` with `input_schema`,
`tool_choice`, and which of the `stop_sequences` ended the answer."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from npu_engine.errors import UserInputError
from npu_engine.generation import Message, held_tail
from npu_engine.server.anthropic_schemas import (
    AnthropicBlock,
    AnthropicMessage,
    AnthropicTool,
    AnthropicToolChoice,
    _AnthropicPrompt,
)
from npu_engine.tools import Tool, ToolCall, ToolChoice

# Blocks an assistant turn of the history may hold that carry nothing a local model can read back.
_DROPPED = ("thinking", "redacted_thinking")


def chat_messages(body: _AnthropicPrompt) -> list[Message]:
    """The chat messages for a Messages request: the system prompt first, then each turn, with an
    assistant's `tool_use` blocks as its `tool_calls` and a user's `tool_result` blocks as `tool`
    messages (in the order given). Raises UserInputError naming a block that cannot be served."""
    messages: list[Message] = []
    system = _text(body.system, "system")
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(body.messages):
        where = f"messages[{index}]"
        messages += _assistant(message, where) if message.role == "assistant" else _user(message, where)
    if body.messages[-1].role == "assistant":
        raise UserInputError(
            f"messages[{len(body.messages) - 1}]: the last message must be the user's "
            "(prefilling the assistant's answer is not supported)"
        )
    return messages


# A turn's text blocks are separate paragraphs to the model: Claude Code sends a system reminder
# and the prompt as two blocks of one user turn, which run together if joined with nothing.
BLOCKS_JOINED = "\n\n"


def _blocks(message: AnthropicMessage) -> list[AnthropicBlock]:
    content = message.content
    return [AnthropicBlock(type="text", text=content)] if isinstance(content, str) else content


def _user(message: AnthropicMessage, where: str) -> list[Message]:
    found: list[Message] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            found.append({"role": "user", "content": BLOCKS_JOINED.join(text)})
            text.clear()

    for index, block in enumerate(_blocks(message)):
        here = f"{where}.content[{index}]"
        if block.type == "text":
            text.append(block.text or "")
        elif block.type == "tool_result":
            flush()
            if not block.tool_use_id:
                raise UserInputError(f"{here}.tool_use_id is required")
            result = _text(block.content, f"{here}.content")
            found.append(
                {
                    "role": "tool",
                    "tool_call_id": block.tool_use_id,
                    "content": f"Error: {result}" if block.is_error else result,
                }
            )
        else:
            raise UserInputError(f"{here}.type {block.type!r} is not served here (text and tool_result are)")
    flush()
    return found


def _assistant(message: AnthropicMessage, where: str) -> list[Message]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(message)):
        here = f"{where}.content[{index}]"
        if block.type == "text":
            text.append(block.text or "")
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise UserInputError(f"{here}: a tool_use block needs its id and name")
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": block.input or {}},
                }
            )
        elif block.type not in _DROPPED:
            raise UserInputError(f"{here}.type {block.type!r} is not served here (text and tool_use are)")
    turn: Message = {"role": "assistant", "content": BLOCKS_JOINED.join(text)}
    if calls:
        turn["tool_calls"] = calls
    return [turn]


def _text(content: str | Sequence[AnthropicBlock] | None, where: str) -> str:
    """The text of a string or of text blocks (the system prompt, a tool result's content)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for index, block in enumerate(content):
        if block.type != "text":
            raise UserInputError(f"{where}[{index}].type {block.type!r} is not served here (text is)")
        parts.append(block.text or "")
    return "\n".join(parts) if where == "system" else "".join(parts)


def tools_of(tools: Sequence[AnthropicTool] | None) -> tuple[Tool, ...]:
    """The declared tools, their `input_schema` as the arguments' JSON schema."""
    found = []
    for index, tool in enumerate(tools or ()):
        if tool.type not in (None, "custom"):
            raise UserInputError(
                f"tools[{index}].type {tool.type!r}: Anthropic's server tools are not served here"
            )
        if tool.input_schema is None:
            raise UserInputError(f"tools[{index}].input_schema is required")
        found.append(Tool(tool.name, tool.description, tool.input_schema))
    return tuple(found)


def tool_choice_of(choice: AnthropicToolChoice | None) -> ToolChoice:
    """Anthropic's tool_choice as the engine's: auto, any (required), tool (that one), none."""
    if choice is None or choice.type == "auto":
        return "auto"
    if choice.type == "any":
        return "required"
    if choice.type == "none":
        return "none"
    if not choice.name:
        raise UserInputError("tool_choice.name is required when tool_choice.type is 'tool'")
    return choice.name


def content_blocks(text: str, calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """An answer as Anthropic's content: its text (when there is some, or nothing else), then a
    `tool_use` block per call."""
    blocks: list[dict[str, Any]] = []
    if text or not calls:
        blocks.append({"type": "text", "text": text})
    blocks += [tool_use(call) for call in calls]
    return blocks


def tool_use(call: ToolCall, with_input: bool = True) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": call.arguments if with_input else {},
    }


def arguments_json(call: ToolCall) -> str:
    return json.dumps(call.arguments)


def stop_reason(finish: str, has_calls: bool, stopped_by: str | None) -> str:
    if has_calls:
        return "tool_use"
    if stopped_by is not None:
        return "stop_sequence"
    return "max_tokens" if finish == "length" else "end_turn"


@dataclass
class StopScanner:
    """Finds which stop sequence ended an answer whose text keeps it (SamplingOptions.include_stop),
    and cuts it off. While streaming, the tail that could still become a stop sequence is held back
    until the next piece shows whether it does."""

    stops: tuple[str, ...]
    held: str = ""
    found: str | None = None

    def feed(self, piece: str) -> str:
        """The text of `piece` (and what was held back) that is surely not part of a stop sequence."""
        if self.found is not None:
            return ""
        text = self.held + piece
        cut = self._first_stop(text)
        if cut is not None:
            self.held = ""
            return text[:cut]
        keep = max((held_tail(text, stop) for stop in self.stops), default=0)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def finish(self) -> str:
        """What is still held back once the answer is over."""
        rest, self.held = self.held, ""
        return "" if self.found is not None else rest

    def _first_stop(self, text: str) -> int | None:
        hits = [(text.find(stop), stop) for stop in self.stops if stop and stop in text]
        if not hits:
            return None
        at, self.found = min(hits)
        return at
