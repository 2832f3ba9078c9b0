"""How much a compressed model's next-token predictions on real code drift from its source's.

Mean negative log-likelihood per token over held-out code (never the calibration set), computed by
one forward pass of the IR per window. Comparing recipes of the same weights with it is cheap; it
complements, and does not replace, pass@1 on coding tasks.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PerplexityResult:
    model: str
    tokens: int
    mean_nll: float

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.mean_nll))


def _full_logits(model: Any, ids: Any) -> Any:
    """Logits at every position of `ids`, from one forward pass of a stateful IR started fresh."""
    request = model.create_infer_request()
    request.reset_state()
    inputs = {
        "input_ids": ids[None, :],
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None, :],
        "beam_idx": np.zeros(1, dtype=np.int32),
    }
    return request.infer(inputs)["logits"][0]


def _log_softmax_pick(logits: Any, targets: Any) -> Any:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=-1))
    return shifted[np.arange(len(targets)), targets] - log_norm


def code_nll(model_dir: Path, texts: list[str], window: int = 512) -> PerplexityResult:
    """Mean NLL per predicted token of `texts`, each cut into windows of `window` tokens."""
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    core = ov.Core()
    tokenizer = core.compile_model(model_dir / "openvino_tokenizer.xml", "CPU")
    model = core.compile_model(model_dir / "openvino_model.xml", "CPU")
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer([text])["input_ids"][0].astype(np.int64)
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window]
            if len(chunk) < 2:
                continue
            logits = _full_logits(model, chunk).astype(np.float64)
            picked = _log_softmax_pick(logits[:-1], chunk[1:])
            total -= float(picked.sum())
            count += len(chunk) - 1
    return PerplexityResult(model_dir.name, count, total / count)


def greedy_margins(model_dir: Path, prompt: str, continuation: str) -> list[float]:
    """For each token of `continuation` after `prompt`, how far its logit sits below the best
    logit at that position, from one full forward pass of the IR.

    Greedy decoding picks the best token, so a greedy continuation scores 0 everywhere up to
    floating-point noise; a lost, repeated or wrong token shows as a large margin.
    """
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    core = ov.Core()
    tokenizer = core.compile_model(model_dir / "openvino_tokenizer.xml", "CPU")
    model = core.compile_model(model_dir / "openvino_model.xml", "CPU")
    prompt_ids = tokenizer([prompt])["input_ids"][0].astype(np.int64)
    ids = tokenizer([prompt + continuation])["input_ids"][0].astype(np.int64)
    logits = _full_logits(model, ids)
    start = len(prompt_ids)
    predicted = logits[start - 1 : len(ids) - 1]
    chosen = predicted[np.arange(len(predicted)), ids[start:]]
    return [float(m) for m in predicted.max(axis=-1) - chosen]
