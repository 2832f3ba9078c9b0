"""Ollama's prompt templates, as far as editors use them: `/api/generate`'s `template` rendered
into a raw prompt, and the template `/api/show` describes a model with.

A template is Go's text/template with Ollama's values. What is understood: `{{ .System }}`,
`{{ .Prompt }}`, `{{ .Suffix }}`, `{{ .Response }}` (empty: the answer comes after the prompt) and
`{{ .Tools }}` (empty: /api/generate declares no tools; /api/show's template names it, as tool
callers such as litellm look for it there),
`{{ if .X }}…{{ else if .Y }}…{{ else }}…{{ end }}` on those values (nested), and the `{{-` / `-}}`
markers that trim the whitespace next to them. Anything else (other values, functions, ranges,
comments) is a UserInputError naming `template`, since a part left out would change the prompt."""

import json
import re
from dataclasses import dataclass, field

from npu_engine.errors import UserInputError
from npu_engine.families import ModelFamily

VALUES = ("System", "Prompt", "Suffix", "Response", "Tools")
ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
VALUE = re.compile(r"\.(\w+)")
IF = re.compile(r"(?:else\s+)?if\s+\.(\w+)")

# The chat part of /api/show's template for the families whose chat format is known; the engine
# itself renders chats with the model's own chat template.
CHATML = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
)
CHAT_TEMPLATES = {
    "qwen2.5-coder": CHATML,
    "smollm2": CHATML,
    "deepseek-r1-distill": "{{ if .System }}{{ .System }}{{ end }}<｜User｜>{{ .Prompt }}<｜Assistant｜>",
    "deepseek-coder": (
        "{{ if .System }}{{ .System }}\n{{ end }}### Instruction:\n{{ .Prompt }}\n### Response:\n"
    ),
    "codellama": "[INST] {{ if .System }}<<SYS>>\n{{ .System }}\n<</SYS>>\n\n{{ end }}{{ .Prompt }} [/INST]",
}
GENERIC_CHAT = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
# What /api/show's template says of tools, for families that call them: the engine writes the
# declarations (the model's own template, or its system prompt) and parses <tool_call> back.
TOOLS_NOTE = (
    "{{ if .Tools }}<tools> are declared by npu-engine; calls come back as "
    '<tool_call>{"name": ..., "arguments": ...}</tool_call>\n{{ end }}'
)
# The chat turn's end in each chat format, for /api/show's stop parameters.
CHAT_STOPS = {"qwen2.5-coder": ("<|im_end|>",), "smollm2": ("<|im_end|>",), "deepseek-coder": ("<|EOT|>",)}


@dataclass
class _Node:
    """Text, a value, or a branch: `test` names the value an `if` tests; `then` and `otherwise`."""

    text: str = ""
    value: str | None = None
    test: str | None = None
    then: list["_Node"] = field(default_factory=list)
    otherwise: list["_Node"] = field(default_factory=list)


def _bad(detail: str) -> UserInputError:
    return UserInputError(
        f"template: {detail} (understood: {{{{ .System }}}}, {{{{ .Prompt }}}}, "
        "{{ .Suffix }}, {{ .Response }}, {{ if .X }}…{{ else }}…{{ end }})"
    )


def _pieces(template: str) -> list[tuple[str, str]]:
    """("text", …) and ("action", …) pieces, with the trim markers applied to the text."""
    pieces: list[tuple[str, str]] = []
    at = 0
    trim_next = False
    for match in ACTION.finditer(template):
        text = template[at : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", match.group(2)))
        trim_next = bool(match.group(3))
        at = match.end()
    rest = template[at:]
    if "{{" in rest:
        raise _bad("an unclosed {{")
    pieces.append(("text", rest.lstrip() if trim_next else rest))
    return pieces


@dataclass
class _Frame:
    """An open `if`: the branch, whether its `else` part is being read, and whether it is an
    `else if` (closed by the `end` of the `if` it hangs from)."""

    branch: _Node
    in_else: bool = False
    chained: bool = False

    @property
    def body(self) -> list[_Node]:
        return self.branch.otherwise if self.in_else else self.branch.then


def parse(template: str) -> list[_Node]:
    """The template's tree; UserInputError naming `template` for what is not understood."""
    root: list[_Node] = []
    stack: list[_Frame] = []
    for kind, piece in _pieces(template):
        body = stack[-1].body if stack else root
        if kind == "text":
            if piece:
                body.append(_Node(text=piece))
        elif (value := VALUE.fullmatch(piece)) is not None:
            body.append(_Node(value=_known(value.group(1))))
        elif (test := IF.fullmatch(piece)) is not None:
            branch = _Node(test=_known(test.group(1)))
            chained = piece.startswith("else")
            if chained:  # `else if`: a branch in the else part of the open one
                _else(stack)
            stack[-1].body.append(branch) if stack else root.append(branch)
            stack.append(_Frame(branch, chained=chained))
        elif piece == "else":
            _else(stack)
        elif piece == "end":
            if not stack:
                raise _bad("an end without its if")
            while stack.pop().chained:
                pass
        else:
            raise _bad(f"{{{{ {piece[:40]} }}}} is not understood")
    if stack:
        raise _bad("an if without its end")
    return root


def _known(name: str) -> str:
    if name not in VALUES:
        raise _bad(f"unknown value .{name}")
    return name


def _else(stack: list[_Frame]) -> None:
    if not stack or stack[-1].in_else:
        raise _bad("an else without its if")
    stack[-1].in_else = True


def render(template: str, values: dict[str, str]) -> str:
    """The template with `values` (missing ones are empty) put in."""
    return _render(parse(template), values)


def _render(nodes: list[_Node], values: dict[str, str]) -> str:
    out: list[str] = []
    for node in nodes:
        if node.value is not None:
            out.append(values.get(node.value, ""))
        elif node.test is not None:
            out.append(_render(node.then if values.get(node.test) else node.otherwise, values))
        else:
            out.append(node.text)
    return "".join(out)


def show_template(family: ModelFamily) -> str:
    """The template `/api/show` gives a model of `family`: its FIM form when it has one (so
    editors that look for `.Suffix`, as Continue does, turn fill-in-the-middle on), else its chat;
    with `.Tools` for a family that calls tools. An embedding model has none."""
    if family.embedding:
        return ""
    chat = CHAT_TEMPLATES.get(family.name, GENERIC_CHAT)
    if family.tools is not None:
        chat = TOOLS_NOTE + chat
    infill = family.infill
    if infill is None:
        return chat
    fim = f"{infill.prefix}{{{{ .Prompt }}}}{infill.suffix}{{{{ .Suffix }}}}{infill.middle}"
    return f"{{{{- if .Suffix }}}}{fim}{{{{- else }}}}{chat}{{{{ end }}}}"


def show_parameters(family: ModelFamily, context: int) -> str:
    """`/api/show`'s parameters, one `name value` line each as Ollama writes them: the stop tokens
    (the chat turn's end, then the FIM end tokens) and the context length."""
    stops = list(CHAT_STOPS.get(family.name, ()))
    if family.infill is not None:
        stops += [s for s in family.infill.stop if s not in stops]
    lines = [f"{'stop':<30} {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    lines.append(f"{'num_ctx':<30} {context}")
    return "\n".join(lines)
