"""Embeddings: text in, one vector per text out, from a profile's embedding tier.

What an embedding model needs beyond its weights (`EmbeddingInfo`: pooling, normalisation, the
longest input, the vector size) is read from its sentence-transformers files when it is converted
and kept in its manifest; `Engine.embed` answers with an `EmbeddingResult`."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from npu_engine.errors import UserInputError

Pooling = Literal["mean", "cls", "last_token"]
MAX_INPUTS = 2048  # texts in one request, as OpenAI allows
BATCH = 16  # texts the pipeline embeds at once: padded to the longest, so memory stays bounded


@dataclass(frozen=True)
class EmbeddingInfo:
    """How an embedding model turns its hidden states into one vector: the pooling, whether the
    vector is L2-normalised, the most tokens it reads (longer texts are truncated or refused), and
    the vector's size."""

    pooling: Pooling
    normalize: bool
    max_length: int
    dimensions: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "EmbeddingInfo":
        pooling = raw["pooling"]
        if pooling not in ("mean", "cls", "last_token"):
            raise ValueError(f"unknown pooling {pooling!r}")
        return cls(pooling, bool(raw["normalize"]), int(raw["max_length"]), int(raw["dimensions"]))


def sentence_transformers_info(folder: Path) -> EmbeddingInfo | None:
    """The EmbeddingInfo of a sentence-transformers folder (its `modules.json` names a Pooling
    module), or None when the folder is no sentence-transformers model."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return None
    try:
        modules = json.loads(modules_path.read_text("utf-8"))
        types = {str(m["type"]).rsplit(".", 1)[-1]: str(m.get("path", "")) for m in modules}
        if "Pooling" not in types:
            return None
        pooling_raw = json.loads((folder / types["Pooling"] / "config.json").read_text("utf-8"))
        config = json.loads((folder / "config.json").read_text("utf-8"))
        bert_path = folder / "sentence_bert_config.json"
        bert = json.loads(bert_path.read_text("utf-8")) if bert_path.is_file() else {}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"{folder}: unreadable sentence-transformers configuration ({error})") from None
    if pooling_raw.get("pooling_mode_mean_tokens"):
        pooling: Pooling = "mean"
    elif pooling_raw.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pooling_raw.get("pooling_mode_lasttoken"):
        pooling = "last_token"
    else:
        raise UserInputError(f"{folder}: its pooling ({pooling_raw}) is not mean, CLS or last token")
    longest = int(config.get("max_position_embeddings", 512))
    return EmbeddingInfo(
        pooling=pooling,
        normalize="Normalize" in types,
        max_length=min(int(bert.get("max_seq_length") or longest), longest),
        dimensions=int(pooling_raw.get("word_embedding_dimension") or config["hidden_size"]),
    )


@dataclass(frozen=True)
class EmbedRequest:
    """Texts to embed on a tier. `truncate` False refuses a text longer than the model reads,
    instead of embedding its beginning."""

    texts: tuple[str, ...]
    tier: str = "embed"
    truncate: bool = True

    @classmethod
    def of(cls, texts: str | Sequence[str], tier: str = "embed", truncate: bool = True) -> "EmbedRequest":
        return cls((texts,) if isinstance(texts, str) else tuple(texts), tier, truncate)

    def validate(self) -> "EmbedRequest":
        """Raise UserInputError for texts no model could take: none, too many, or not text."""
        if not self.texts:
            raise UserInputError("input: give at least one text to embed")
        if len(self.texts) > MAX_INPUTS:
            raise UserInputError(f"input: {len(self.texts)} texts; at most {MAX_INPUTS} in one request")
        for index, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise UserInputError(f"input[{index}]: {type(text).__name__} is not text")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise UserInputError(f"input[{index}]: not valid Unicode (a lone surrogate)") from None
        return self


@dataclass(frozen=True)
class RawEmbedding:
    """What a backend returns: one vector per text, in order, the tokens each text was read as
    (after truncation), and the seconds the embedding took."""

    vectors: tuple[tuple[float, ...], ...]
    tokens: tuple[int, ...]
    seconds: float


@dataclass(frozen=True)
class EmbeddingResult:
    """The vectors, one per text in order, and who made them: tier, converted model, device; the
    tokens read (all texts together), the seconds embedding took and the seconds loading the model
    took first (0 when it was loaded already)."""

    vectors: tuple[tuple[float, ...], ...]
    tier: str
    model: str
    device: str
    tokens: int
    seconds: float
    load_seconds: float = 0.0

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0
