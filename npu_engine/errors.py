"""The exceptions npu-engine raises on purpose.

Every `NpuEngineError` is a condition a user can act on; the CLI prints its message on one
line and exits with its `exit_code`. Anything else escaping is a bug and keeps its traceback.
"""

import re


class NpuEngineError(Exception):
    """Base of all expected failures."""

    exit_code = 1


class UserInputError(NpuEngineError):
    """The user asked for something malformed: a bad path, name, flag or spec."""

    exit_code = 2


class SourceError(NpuEngineError):
    """A model source is missing, unreadable, corrupt or unsupported."""

    exit_code = 3


class ChecksumError(SourceError):
    """A file's sha256 differs from the one it must have."""


class StoreError(NpuEngineError):
    """The model store refused an operation: a name clash, a missing model, a failed verify."""

    exit_code = 4


class ModelExistsError(StoreError):
    """A model of that name is already in the store with another source or recipe."""


class ModelNotFoundError(StoreError):
    """No complete model of that name is in the store."""


class DiskSpaceError(NpuEngineError):
    """Not enough free disk space for a conversion."""

    exit_code = 5


class ConversionMemoryError(NpuEngineError):
    """A conversion would need more memory than the machine has available."""

    exit_code = 5


class ConversionError(NpuEngineError):
    """Export or compression failed for a reason the user can read."""

    exit_code = 6


class NetworkError(NpuEngineError):
    """A download or a remote service could not be reached."""

    exit_code = 7


class EngineBusyError(NpuEngineError):
    """A bounded queue is full; the caller should retry later."""

    exit_code = 8


class GenerationError(NpuEngineError):
    """Every device and adapter in a tier's fallback chain failed."""

    exit_code = 9


class ReceiptError(NpuEngineError):
    """A receipt could not be made, or did not verify. `reason` names what failed, for callers
    that act on it: "malformed", "signature", "key", "text", "model", "manifest", "files", "remote"."""

    exit_code = 10

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ContextLengthError(UserInputError):
    """A prompt longer than the model's context: refused with the token counts, never truncated."""

    def __init__(self, prompt_tokens: int, context: int, model: str) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens; {model} takes at most {context} here "
            "(shorten it or use a tier with a longer context)"
        )
        self.prompt_tokens = prompt_tokens
        self.context = context


class UnknownModelError(UserInputError):
    """A request named a model (or tier) this engine does not serve."""


# A URL is kept whole; a file path (absolute, or relative with a file extension) and the
# `:line[:column]` after it are dropped, with the "at"/"from"/"in" that introduced it.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_PATH = re.compile(
    r"(?:\s+(?:at|from|in))?\s*"
    r"(?:"
    r"(?<![\w.])(?:~|[A-Za-z]:)?[\\/](?:[^\s:'\"\\/]+[\\/])*[^\s:'\"\\/,;)]*"  # absolute: /a/b, C:\a, ~/a
    r"|(?:[\w.+-]+[\\/])+[\w+-]+\.\w+"  # relative with an extension: src/cpp/core.cpp
    r")"
    r"(?::\d+)*:?",
    re.IGNORECASE,
)
_SOURCE_LINE = re.compile(r"^Exception(?: from)?$", re.IGNORECASE)
MAX_MESSAGE_CHARS = 4000  # a user needs the sentence; the log keeps the rest


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def presentable(error: BaseException | str) -> str:
    """An exception's message fit to show a user: on one line, without the file paths and source
    locations that libraries (OpenVINO's `Exception from src/...cpp:112:`, build paths) put in it.

    The sentence is kept; the log, not the user, gets the detail. A message that was nothing but
    locations becomes the exception's type name.
    """
    text = str(error)[:MAX_MESSAGE_CHARS]
    kept: list[str] = []
    for line in text.splitlines():
        parts, start = [], 0
        for url in _URL.finditer(line):
            parts += [_PATH.sub("", line[start : url.start()]), url.group()]
            start = url.end()
        parts.append(_PATH.sub("", line[start:]))
        cleaned = " ".join("".join(parts).split()).strip(" :")
        if cleaned and not _SOURCE_LINE.match(cleaned):
            kept.append(cleaned)
    message = " ".join(kept)
    if message:
        return message
    return type(error).__name__ if isinstance(error, BaseException) else "error"
