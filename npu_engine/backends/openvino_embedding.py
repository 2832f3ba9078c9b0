"""Embedding texts with openvino_genai.TextEmbeddingPipeline, its tokens counted by the model's own
OpenVINO tokenizer."""

import time
from collections.abc import Sequence

from npu_engine.backends.genai_config import _REFUSED
from npu_engine.backends.pipeline_spec import EmbeddingSpec
from npu_engine.embedding import BATCH, RawEmbedding
from npu_engine.errors import UserInputError, presentable


class OpenVinoEmbedder:
    """One loaded TextEmbeddingPipeline. Not re-entrant: callers serialize their calls."""

    concurrent = False

    def __init__(self, spec: EmbeddingSpec) -> None:
        import openvino_genai

        started = time.monotonic()
        self.spec = spec
        config = openvino_genai.TextEmbeddingPipeline.Config()
        # "mean", "cls", "last_token": PoolingType.MEAN, CLS, LAST_TOKEN
        config.pooling_type = getattr(openvino_genai.TextEmbeddingPipeline.PoolingType, spec.pooling.upper())
        config.normalize = spec.normalize
        config.max_length = spec.max_length
        self._pipeline = openvino_genai.TextEmbeddingPipeline(
            str(spec.model_path), spec.device, config, **spec.properties()
        )
        self._tokenizer = openvino_genai.Tokenizer(str(spec.model_path))
        self.load_seconds = time.monotonic() - started

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's tokens, special tokens included, before any truncation."""
        try:
            encoded = self._tokenizer.encode(list(texts), add_special_tokens=True)
        except _REFUSED as error:
            raise UserInputError(f"the model's tokenizer refused the text: {presentable(error)}") from error
        return [int(row.sum()) for row in encoded.attention_mask.data]

    def embed(self, texts: Sequence[str], truncate: bool = True) -> RawEmbedding:
        """One vector per text, in batches of BATCH. A text longer than the model reads is cut to
        its first `max_length` tokens, or refused (UserInputError naming it) when not `truncate`."""
        started = time.monotonic()
        vectors: list[tuple[float, ...]] = []
        tokens: list[int] = []
        limit = self.spec.max_length
        for first in range(0, len(texts), BATCH):
            batch = list(texts[first : first + BATCH])
            counts = self.count_tokens(batch)
            for index, count in enumerate(counts):
                if count > limit and not truncate:
                    raise UserInputError(
                        f"input[{first + index}] has {count} tokens; this model reads at most {limit} "
                        "(send truncate: true to embed its beginning)"
                    )
            tokens += [min(count, limit) for count in counts]
            vectors += [tuple(float(x) for x in row) for row in self._pipeline.embed_documents(batch)]
        return RawEmbedding(tuple(vectors), tuple(tokens), time.monotonic() - started)
