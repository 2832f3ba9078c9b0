"""Reading code out of a model's answer."""

import re

FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(answer: str, language: str = "python") -> str:
    """The code in an answer: fenced blocks tagged `language` (or untagged), joined; else the whole text.

    An unterminated last fence (the answer hit its token limit) still counts.
    """
    blocks = [(tag.lower(), body) for tag, body in FENCE.findall(answer)]
    chosen = [body for tag, body in blocks if tag in (language, "")] or [body for _, body in blocks]
    return "\n".join(chosen).strip() if chosen else answer.strip()
