"""Ollama's `think` for a model that reasons before answering (DeepSeek-R1 distills): its
<think>…</think> section goes to `thinking`, what follows to the answer. Such a model's chat
template may open <think> itself, so everything before </think> is thinking, whether or not the
opening tag is in the text; an answer cut off before </think> is all thinking."""

from dataclasses import dataclass

from npu_engine.generation import held_tail

OPEN = "<think>"
CLOSE = "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a whole answer."""
    stream = ThinkingStream()
    thinking, answer = stream.feed(text)
    rest_thinking, rest_answer = stream.finish()
    return thinking + rest_thinking, answer + rest_answer


@dataclass
class ThinkingStream:
    """Splits streamed pieces into (thinking, answer) text, holding back a tail that may still
    turn out to be part of a tag."""

    answering: bool = False
    started: bool = False  # some thinking text has been seen (a leading <think> is dropped)
    held: str = ""
    thought: bool = False  # some thinking text has been given (the newlines after <think> are dropped)
    answered: bool = False  # some answer text has been given (the newlines after </think> are dropped)

    def feed(self, piece: str) -> tuple[str, str]:
        if self.answering:
            return "", self._answer(piece)
        text = self.held + piece
        self.held = ""
        if not self.started:
            stripped = text.lstrip()
            if OPEN.startswith(stripped):  # perhaps the opening tag, still incomplete
                self.held = text
                return "", ""
            if stripped.startswith(OPEN):
                text = stripped[len(OPEN) :]
            self.started = True
        if not self.thought:
            text = text.lstrip("\n")
            self.thought = bool(text)
        end = text.find(CLOSE)
        if end >= 0:
            self.answering = True
            return text[:end], self._answer(text[end + len(CLOSE) :])
        keep = held_tail(text, CLOSE)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], ""

    def _answer(self, text: str) -> str:
        if not self.answered:
            text = text.lstrip("\n")
            self.answered = bool(text)
        return text

    def finish(self) -> tuple[str, str]:
        rest, self.held = self.held, ""
        return ("", rest) if self.answering else (rest, "")
