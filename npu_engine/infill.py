"""Where a fill-in-the-middle answer ends, so that autocomplete gets a short answer fast.

Besides the family's FIM end tokens (stop tokens, see `families.Infill.stop`) two rules end an
infill. The first is llama-server's `n_indent` (tools/server: once a new line has come, a line
indented less than `n_indent` ends the completion and is cut), with `n_indent` read from the
prompt, where llama-server takes it from the client (llama.vim sends the cursor's indentation):

- **Dedent**: once the answer has gone to a new line, a line whose first non-blank character
  stands left of the cursor's indentation (the leading spaces and tabs of the prefix's last line,
  counted as characters) ends the infill; that line is dropped. The answer has left the block
  the cursor is in. Off when the cursor's line has no indentation.
- **Blank line**: when the suffix holds code (the answer must connect to it), a blank line after
  some code ends the infill; the blank line is dropped. The answer has finished a block and would
  go on to write what the suffix already holds.

Both cut at the start of a line, so a kept answer ends with the newline of its last line. A line
is judged when its first non-blank character (or its end, for a blank line) arrives, so a stream
holds back at most the indentation of the line being written."""

from collections.abc import Callable
from dataclasses import dataclass, replace

from npu_engine.errors import UserInputError
from npu_engine.families import Infill, ModelFamily
from npu_engine.generation import RawPrompt, TextSink
from npu_engine.request import GenerationResult

BLANK = " \t\r"


@dataclass(frozen=True)
class InfillEnd:
    """The two rules above for one cursor: its indentation, and whether code follows it; and the
    characters of code before it (what the next keystroke's prompt starts with)."""

    indent: int
    suffix_continues: bool
    before_chars: int

    @classmethod
    def around(cls, before: str, after: str) -> "InfillEnd":
        """The rules for an infill between `before` and `after`."""
        line = before.rpartition("\n")[2]
        return cls(len(line) - len(line.lstrip(" \t")), bool(after.strip()), len(before))

    def end(self, text: str) -> int | None:
        """The length of `text` the infill keeps, or None while no rule has ended it."""
        seen_code = bool(text.partition("\n")[0].strip(BLANK))
        start = text.find("\n") + 1
        while start > 0:
            newline = text.find("\n", start)
            line = text[start:] if newline < 0 else text[start:newline]
            stripped = line.lstrip(BLANK)
            if stripped:
                if self.indent and len(line) - len(line.lstrip(" \t")) < self.indent:
                    return start
                seen_code = True
            elif newline >= 0 and seen_code and self.suffix_continues:
                return start
            start = newline + 1
        return None

    def settled(self, text: str) -> int:
        """The length of `text` that no further text can cut: all but a last line begun after a
        newline that is still blank (it may yet be a blank line or a dedented one)."""
        start = text.rfind("\n") + 1
        if start > 0 and not text[start:].strip(BLANK):
            return start
        return len(text)


class InfillStream:
    """Relays an infill's text to `sink` as the rules settle it, and says when they ended it."""

    def __init__(self, rule: InfillEnd, sink: TextSink) -> None:
        self.rule = rule
        self.sink = sink
        self.text = ""
        self.sent = 0
        self.ended = False  # a rule ended the infill (not the caller)

    def hear(self, piece: str) -> bool | None:
        """The backend's on_text: True asks it to stop (a rule ended it, or the sink asked)."""
        if self.ended:
            return True
        self.text += piece
        end = self.rule.end(self.text)
        if end is not None:
            self.ended = True
            self._send(end)
            return True
        return self._send(self.rule.settled(self.text))

    def relay(self, answer: Callable[[TextSink], GenerationResult]) -> GenerationResult:
        """`answer` (a target's, hearing this stream) cut by the rules; ended by a rule, it
        finished ("stop"), not cancelled."""
        result = answer(self.hear)
        text, ended = self.finish(result.text)
        return replace(result, text=text, finish_reason="stop" if ended else result.finish_reason)

    def finish(self, text: str) -> tuple[str, bool]:
        """The answer's whole text cut by the rules, after relaying what was held back; and
        whether a rule ended it. `text` is the backend's answer, which leaves out stop strings."""
        end = self.rule.end(text)
        kept = text if end is None else text[:end]
        if kept.startswith(self.text[: self.sent]) and len(kept) > self.sent:
            self.sink(kept[self.sent :])
        return kept, self.ended or end is not None

    def _send(self, upto: int) -> bool | None:
        if upto <= self.sent:
            return None
        piece, self.sent = self.text[self.sent : upto], upto
        return self.sink(piece)


def fim_parts(infill: Infill, prompt: str) -> tuple[str, str] | None:
    """The code before and after the cursor of a prompt already written in the family's FIM form
    (prefix token, code, suffix token, code, middle token at the very end), as editors such as
    Continue send it to /v1/completions; None for any other prompt."""
    if not prompt.endswith(infill.middle):
        return None
    body = prompt[: -len(infill.middle)]
    head, found_suffix, after = body.rpartition(infill.suffix)
    if not found_suffix:
        return None
    _, found_prefix, before = head.rpartition(infill.prefix)
    if not found_prefix:
        return None
    return before, after


def completion_prompt(
    family: ModelFamily, model: str, prompt: str, suffix: str | None
) -> tuple[RawPrompt, InfillEnd | None]:
    """The text a raw completion of `model` (a family member, named in errors) continues, and for
    an infill the rules that end it. A `suffix`, or a prompt already in the family's FIM form, is
    an infill; a suffix for a family without FIM tokens is a UserInputError naming `suffix`."""
    infill = family.infill
    if suffix is not None:
        if infill is None:
            raise UserInputError(
                f"suffix: {model} cannot fill in the middle; send the prompt without a suffix, "
                "or use a tier whose model can (an `insert` capability)"
            )
        return RawPrompt(infill.prompt(prompt, suffix), infill.stop), InfillEnd.around(prompt, suffix)
    parts = fim_parts(infill, prompt) if infill is not None else None
    if infill is None or parts is None:
        return RawPrompt(prompt), None
    return RawPrompt(prompt, infill.stop), InfillEnd.around(*parts)
