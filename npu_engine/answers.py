"""Reading code out of a model's answer."""

import re
from collections.abc import Sequence

FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
CLOSED_FENCE = re.compile(r"```[^\n]*\n.*?```", re.DOTALL)


def extract_code(answer: str, tags: str | Sequence[str] = "python") -> str:
    """The code in an answer: fenced blocks tagged with one of `tags` (or untagged), joined; else
    every fenced block; else the whole text.

    An unterminated last fence (the answer hit its token limit) still counts.
    """
    wanted = {tags} if isinstance(tags, str) else set(tags)
    blocks = [(tag.lower(), body) for tag, body in FENCE.findall(answer)]
    chosen = [body for tag, body in blocks if tag in wanted or tag == ""] or [body for _, body in blocks]
    return "\n".join(chosen).strip() if chosen else answer.strip()


def has_closed_block(answer: str) -> bool:
    """Whether the answer already holds one complete fenced code block."""
    return CLOSED_FENCE.search(answer) is not None
