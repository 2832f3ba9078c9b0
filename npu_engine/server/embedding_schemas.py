"""Request bodies of the embedding routes: OpenAI's /v1/embeddings, Ollama's /api/embed and its
older /api/embeddings. Strict like every body (see schemas._Lenient): a number is no text."""

from typing import Any, Literal

from pydantic import Field, field_validator

from npu_engine.embedding import MAX_INPUTS
from npu_engine.server.schemas import OllamaOptions, _Lenient

TOKEN_IDS = "token ids are not accepted here: send the text"


def _no_token_ids(value: Any) -> Any:
    """OpenAI also takes token ids (a list of integers, or of lists of them); this server embeds
    text with the model's own tokenizer, so ids get a 400 that says so rather than a type error."""
    if isinstance(value, list) and any(
        isinstance(item, int) or (isinstance(item, list) and item and isinstance(item[0], int))
        for item in value
    ):
        raise ValueError(TOKEN_IDS)
    return value


class EmbeddingRequest(_Lenient):
    """OpenAI's embeddings request. `dimensions` must be the model's own: all-MiniLM-L6-v2 was not
    trained to be shortened, so a shorter vector is refused rather than cut."""

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(description="a text, or a list of texts (not token ids)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        value = _no_token_ids(value)
        if value == "" or value == []:
            raise ValueError("give at least one non-empty text")
        if isinstance(value, list):
            if len(value) > MAX_INPUTS:
                raise ValueError(f"at most {MAX_INPUTS} texts in one request")
            if any(item == "" for item in value):
                raise ValueError("an empty string cannot be embedded")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class OllamaEmbedRequest(_Lenient):
    """Ollama's /api/embed. An empty `input` loads the model (keep_alive 0 unloads it), as Ollama does."""

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = ""
    truncate: bool = True
    options: OllamaOptions | None = None
    keep_alive: str | float | None = None
    dimensions: int | None = Field(default=None, ge=1)

    @field_validator("input", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        value = _no_token_ids(value)
        if isinstance(value, list) and len(value) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} texts in one request")
        return value

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input] if self.input else []
        return list(self.input)


class OllamaEmbeddingsRequest(_Lenient):
    """Ollama's older /api/embeddings: one `prompt`, one vector back."""

    model: str = Field(min_length=1, max_length=200)
    prompt: str = ""
    options: OllamaOptions | None = None
    keep_alive: str | float | None = None
