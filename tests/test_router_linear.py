"""The router in linear time (issue 10, finding 1): its patterns find what the quadratic ones of
0.1.0 found, on every labelled prompt and on generated text, and a prompt of 1 MiB routes in well
under the bound whatever it is made of."""

import re
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npu_engine.router import (
    QUESTION_START,
    SCAN_CHARS,
    Features,
    Router,
    _phrase_pattern,
    fenced,
    is_code_line,
    load_rules,
    scanned,
)
from npu_engine.router_fit import load_labelled

# The patterns as they were at 0.1.0: the specification the linear ones must keep to the letter.
OLD_FENCED = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
OLD_CODE_LINE = re.compile(
    r"""^\s*(?:def\s|class\s|import\s|from\s\S+\simport|function\s|const\s|let\s|var\s|\#include|return\b
    |fn\s|func\s|pub\s|public\s|private\s|package\s|using\s|SELECT\s|INSERT\s|UPDATE\s|DELETE\s|CREATE\s
    |ALTER\s|for\s*\(|while\s*\(|if\s*\(|@\w+|[}\])];?$)|[;{]\s*$|=>|\w+\([^)]*\)\s*[:{]?\s*$""",
    re.VERBOSE,
)
OLD_QUESTION_START = re.compile(
    r"^\s*(?:what|why|how|when|where|which|who|is|are|can|does|do|should)\b", re.I
)
LEXICONS = {name: words for name, words in load_rules().lexicons.items() if words}
MIB = 1 << 20


def _old_phrase_pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(w) for w in words), key=len, reverse=True)
    return re.compile(r"(?<![\w#+])(?:" + "|".join(alternatives) + r")(?![\w#+])", re.IGNORECASE)


OLD_LEXICONS = {name: _old_phrase_pattern(words) for name, words in LEXICONS.items()}
NEW_LEXICONS = {name: _phrase_pattern(words) for name, words in LEXICONS.items()}


def _assert_as_before(text: str) -> None:
    blocks, prose = fenced(text)
    assert blocks == OLD_FENCED.findall(text)
    assert prose == OLD_FENCED.sub(" ", text)
    for line in [*text.splitlines(), text]:
        assert is_code_line(line) == bool(OLD_CODE_LINE.search(line)), line
    assert bool(QUESTION_START.match(text)) == bool(OLD_QUESTION_START.match(text))
    for name, pattern in NEW_LEXICONS.items():
        assert pattern.findall(text) == OLD_LEXICONS[name].findall(text), name


def test_every_labelled_prompt_is_read_as_before() -> None:
    labelled = load_labelled()
    assert all(len(p.prompt) <= 2 * SCAN_CHARS for p in labelled)  # read whole, as before
    for prompt in labelled:
        _assert_as_before(prompt.prompt)


# Text made of the pieces the patterns look for, so that generated cases hit their edges.
SHAPES = ["```", "```py\n", "def ", "from x import", "for (", "f(x)", "@x", "return", "what "]
UNICODE = ["İ", "K", "ſ", "\u2028"]  # case-folding and line-break oddities
PHRASES = sorted({word for words in LEXICONS.values() for word in words})[::7]
PIECES = st.sampled_from([*"`\n\r\t ()[]{};:=>#+._-'aZ", *SHAPES, *UNICODE, *PHRASES])


@settings(max_examples=1500, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join))
def test_generated_text_is_read_as_before(text: str) -> None:
    _assert_as_before(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["Go", "c++", "c#", "node.js", "API", " ", "  ", "#", "+", "x"]), max_size=10)
)
def test_a_phrase_trie_finds_what_the_sorted_alternation_did(pieces: list[str]) -> None:
    words = ["go", "golang", "c", "c++", "c#", "node", "node.js", "api", "api key", "x"]
    text = "".join(pieces)
    assert _phrase_pattern(words).findall(text) == _old_phrase_pattern(words).findall(text)


ADVERSARIAL = {
    "letters": "a" * MIB,
    "backticks": "`" * MIB,
    "spaces": " " * MIB + "x",
    "indented lines": ("    " * 8 + "x\n") * (MIB // 34),
    "unclosed fence": "```python\n" + "x = f(y)\n" * (MIB // 9),
    "many fences": "```\n" * (MIB // 4),
    "fences on one line": "```a" * (MIB // 4),
    "open brackets": "(" * MIB,
    "calls never closed": "a(" * (MIB // 2),
    "semicolons": ";" * MIB,
    "braces": "{ " * (MIB // 2),
    "long lines of ;": (";" * 200 + "\n") * (MIB // 201),
    "identifiers": "snake_case camelCase f() a.b( " * (MIB // 30),
    "one-letter words": "a " * (MIB // 2),
    "call then spaces": "f(x)" + " " * MIB + "y",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_a_mebibyte_prompt_routes_within_the_bound(name: str) -> None:
    router = Router()
    started = time.perf_counter()
    router.route(ADVERSARIAL[name])
    assert time.perf_counter() - started < 2.0  # ~0.2 s measured; 0.1.0 took minutes to hours


@pytest.mark.parametrize("name", ["letters", "fences on one line", "calls never closed", "call then spaces"])
def test_the_patterns_are_linear_even_unbounded(name: str) -> None:
    text = ADVERSARIAL[name]
    started = time.perf_counter()
    _, prose = fenced(text)
    for line in prose.splitlines():
        is_code_line(line)
    assert time.perf_counter() - started < 2.0  # ~0.1 s for 1 MiB; 0.1.0 took minutes to hours


def test_a_long_prompt_is_read_at_both_ends() -> None:
    request = "Fix the bug in this function:\n\n```python\n"
    text = request + "x = 1\n" * MIB + "```\nWhy does it crash?"
    kept = scanned(text)
    assert len(kept) == 2 * SCAN_CHARS + 1
    assert kept.startswith(request) and kept.endswith("Why does it crash?")
    features, _ = Features(load_rules())(text)
    assert features["code_block"] == 1.0 and features["question"] == 1.0
