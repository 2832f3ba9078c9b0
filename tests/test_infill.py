"""The rules that end an infill (infill.py), the FIM form of a prompt, and the Ollama templates
and contexts the server reads (server/ollama_template.py, server/ollama_prompt.py): decisions,
so tables."""

import pytest

from npu_engine.catalog import load_catalog
from npu_engine.errors import UserInputError
from npu_engine.generation import RawPrompt
from npu_engine.infill import InfillEnd, InfillStream, completion_prompt, fim_parts
from npu_engine.server.ollama_prompt import decode_context, encode_context
from npu_engine.server.ollama_template import render, show_parameters, show_template

BODY = "def f(n):\n    "  # the cursor inside a function body, at indentation 4
AFTER = "\n\nprint(f(3))\n"


@pytest.mark.parametrize(
    ("before", "after", "text", "kept"),
    [
        (BODY, AFTER, "return n\n", None),  # nothing ended it (the FIM end token will)
        (BODY, AFTER, "return n\nprint(f(4))\n", "return n\n"),  # dedented below the cursor
        (BODY, AFTER, "if n:\n        return 1\n    return 2\n", None),  # deeper, then back: kept
        (BODY, AFTER, "x = 1\n\n    return x\n", "x = 1\n"),  # a blank line, code follows
        (BODY, "", "x = 1\n\n    return x\n", None),  # nothing follows: a blank line is no end
        ("x = [\n", AFTER, "1,\n2]\n\ny = 2", "1,\n2]\n"),  # no indentation: only the blank line
        (BODY, AFTER, "\n    return n", None),  # a first line of nothing is no blank line after code
        ("\tif x:\n\t\t", AFTER, "y()\n\tz()", "y()\n"),  # tabs count as characters
    ],
)
def test_where_an_infill_ends(before: str, after: str, text: str, kept: str | None) -> None:
    rule = InfillEnd.around(before, after)
    end = rule.end(text)
    assert (None if end is None else text[:end]) == kept


def test_a_stream_holds_back_only_an_undecided_indentation() -> None:
    heard: list[str] = []
    stream = InfillStream(InfillEnd.around(BODY, AFTER), heard.append)
    pieces = ["if n", ":\n", "        return 1\n", "    ", "return 2\n", "    "]
    assert [stream.hear(piece) for piece in pieces] == [None] * 6
    assert "".join(heard) == "if n:\n        return 1\n    return 2\n"  # the last "    " is held
    assert stream.hear("pass") is None and heard[-1] == "    pass"  # indented enough: relayed
    whole = "if n:\n        return 1\n    return 2\n    pass\n"
    assert stream.finish(whole) == (whole, False)
    assert "".join(heard) == whole  # what was held back at the end is relayed too


def test_a_stream_ended_by_a_dedent_keeps_what_came_before() -> None:
    heard: list[str] = []
    stream = InfillStream(InfillEnd.around(BODY, AFTER), heard.append)
    for piece in ["return n", "\n", "print", "(1)"]:
        if stream.hear(piece):
            break
    assert stream.finish("return n\nprint") == ("return n\n", True)
    assert "".join(heard) == "return n\n"


def test_prompts_in_a_familys_fim_form_are_read_back() -> None:
    infill = load_catalog().model("qwen2.5-coder-0.5b-instruct").family.infill
    assert infill is not None
    assert fim_parts(infill, infill.prompt("def f():\n    ", "\nf()")) == ("def f():\n    ", "\nf()")
    assert fim_parts(infill, "<|repo_name|>r\n<|file_sep|>a.py\n" + infill.prompt("a", "b")) == ("a", "b")
    assert fim_parts(infill, "def f():\n") is None
    assert fim_parts(infill, "<|fim_suffix|>b<|fim_middle|>") is None


def test_the_text_of_a_raw_completion() -> None:
    catalog = load_catalog()
    qwen = catalog.model("qwen2.5-coder-0.5b-instruct").family
    assert qwen.infill is not None
    raw, rule = completion_prompt(qwen, "qwen", "def f():", None)
    assert (raw, rule) == (RawPrompt("def f():"), None)  # as given: no FIM tokens, no end rules
    raw, rule = completion_prompt(qwen, "qwen", BODY, AFTER)
    assert raw == RawPrompt(qwen.infill.prompt(BODY, AFTER), qwen.infill.stop)
    assert rule == InfillEnd(4, True, len(BODY))
    written = qwen.infill.prompt(BODY, AFTER)
    assert completion_prompt(qwen, "qwen", written, None) == (RawPrompt(written, qwen.infill.stop), rule)
    smollm = catalog.model("smollm2-135m-instruct").family
    assert completion_prompt(smollm, "smollm2", written, None) == (RawPrompt(written), None)
    with pytest.raises(UserInputError, match="^suffix: smollm2 cannot fill in the middle"):
        completion_prompt(smollm, "smollm2", BODY, AFTER)
    codellama = catalog.model("codellama-34b-instruct").family  # FIM tokens, but not trained to infill
    with pytest.raises(UserInputError, match="^suffix: "):
        completion_prompt(codellama, "codellama-34b", BODY, AFTER)


TEMPLATE_CASES = [
    ("{{ .System }}|{{ .Prompt }}", {"System": "s", "Prompt": "p"}, "s|p"),
    ("{{ if .System }}[{{ .System }}]{{ end }}{{ .Prompt }}", {"Prompt": "p"}, "p"),
    ("{{ if .System }}[{{ .System }}]{{ end }}{{ .Prompt }}", {"System": "s", "Prompt": "p"}, "[s]p"),
    ("{{ if .Suffix }}A{{ else if .System }}B{{ else }}C{{ end }}", {"System": "s"}, "B"),
    ("{{ if .Suffix }}A{{ else if .System }}B{{ else }}C{{ end }}", {}, "C"),
    ("{{ if .Suffix }}{{ if .System }}S{{ end }}A{{ end }}!", {"Suffix": "x"}, "A!"),
    ("a  {{- .Prompt -}}  b{{ .Response }}", {"Prompt": "p"}, "apb"),
]


@pytest.mark.parametrize(("template", "values", "rendered"), TEMPLATE_CASES)
def test_templates_render_as_ollama_does(template: str, values: dict[str, str], rendered: str) -> None:
    assert render(template, values) == rendered


@pytest.mark.parametrize(
    "template",
    [
        "{{ .Messages }}",
        "{{ range .Messages }}x{{ end }}",
        "{{ if .System }}x",
        "x{{ end }}",
        "{{ .Prompt",
        "{{ else }}",
        "{{ if .System }}a{{ else }}b{{ else }}c{{ end }}",
        '{{ if eq .System "" }}x{{ end }}',
        "{{/* a comment */}}",
    ],
)
def test_templates_beyond_what_is_understood_are_refused_naming_template(template: str) -> None:
    with pytest.raises(UserInputError, match=r"^template: "):
        render(template, {"Prompt": "p"})


def test_show_describes_infill_with_suffix_and_chat_without() -> None:
    catalog = load_catalog()
    qwen = catalog.model("qwen2.5-coder-0.5b-instruct").family
    smollm = catalog.model("smollm2-135m-instruct").family
    fim = show_template(qwen)
    assert ".Suffix" in fim and ".Suffix" not in show_template(smollm)
    assert render(fim, {"Prompt": "a", "Suffix": "b"}) == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
    assert render(fim, {"Prompt": "hi"}).endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    parameters = show_parameters(qwen, 8192).splitlines()
    assert parameters[-1].split() == ["num_ctx", "8192"]
    assert 'stop                           "<|fim_pad|>"' in parameters


def test_a_context_carries_its_conversation_back() -> None:
    from npu_engine.server.ollama_prompt import Turn

    turns = (Turn("be brief", "2+2?", "4 ☺"), Turn("", "and 3+3?", "6"))
    assert decode_context(encode_context(turns)) == turns
    for bad in ([256], [-1], list(b"not json"), list(b'{"a": 1}'), list(b'[["a", "b"]]')):
        with pytest.raises(UserInputError, match="^context "):
            decode_context(bad)
