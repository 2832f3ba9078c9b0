"""Conversion recipes: how weights are compressed for a device class, read from `convert/recipes.json`."""

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from npu_engine.data import read_json, read_lines
from npu_engine.errors import UserInputError

DeviceClass = Literal["cpu", "gpu", "npu"]
DEVICE_CLASSES: tuple[DeviceClass, ...] = ("cpu", "gpu", "npu")
WeightFormat = Literal["int4", "int8", "fp16"]
# Bytes on disk and in memory per weight, scales and the INT8 embeddings included (measured on
# Qwen2.5-Coder and SmolLM2 conversions, rounded up).
BYTES_PER_WEIGHT: dict[str, float] = {"int4": 0.6, "int8": 1.1, "fp16": 2.0}


@dataclass(frozen=True)
class Recipe:
    """One way to compress a model; recorded whole in every manifest it made."""

    name: str
    description: str
    weight_format: WeightFormat
    sym: bool
    group_size: int
    ratio: float
    awq: bool
    scale_estimation: bool
    gptq: bool
    calibration: str | None
    num_samples: int | None
    group_size_fallback: str
    devices: tuple[DeviceClass, ...]
    # How the conversion that used it ran, recorded in the manifest; not part of what makes two
    # recipes the same. gguf-direct: built from a GGUF's quantized tensors, one weight at a time
    # (gguf_export); dequantized: a GGUF de-quantized to a float model, then exported by
    # optimum-intel; exported: a Hugging Face model exported by optimum-intel; stored: a
    # pre-converted IR kept as it is; "" in manifests written before paths were recorded.
    path: str = field(default="", compare=False)

    @property
    def data_aware(self) -> bool:
        """Whether compressing needs the model's activations on calibration text (mixed precision
        is chosen from them here; AWQ, scale estimation and GPTQ use them)."""
        return self.calibration is not None or self.ratio != 1.0

    @property
    def bytes_per_weight(self) -> float:
        return BYTES_PER_WEIGHT[self.weight_format]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Recipe":
        return cls(**{**raw, "devices": tuple(raw["devices"])})


@dataclass(frozen=True)
class RecipeBook:
    """All recipes, which one each device class gets by default for a model size, and which one
    an embedding model gets (`embedding_defaults`, by device class)."""

    recipes: dict[str, Recipe]
    defaults: dict[str, list[tuple[int | None, str]]]
    embedding_defaults: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Recipe:
        try:
            return self.recipes[name]
        except KeyError:
            known = ", ".join(sorted(self.recipes))
            raise UserInputError(f"unknown recipe {name!r} (known: {known})") from None

    def default_for(self, device: DeviceClass, parameters: int, embedding: bool = False) -> Recipe:
        """The default recipe for `device` and a model of `parameters` weights (an embedding model
        has its own default where recipes.json names one)."""
        if embedding and device in self.embedding_defaults:
            return self.recipes[self.embedding_defaults[device]]
        for max_parameters, name in self.defaults[device]:
            if max_parameters is None or parameters <= max_parameters:
                return self.recipes[name]
        raise AssertionError(f"recipes.json: defaults for {device} end without a catch-all")

    def choose(
        self, device: DeviceClass, parameters: int, name: str | None, embedding: bool = False
    ) -> Recipe:
        """The named recipe, checked against the device, else the device's default."""
        if name is None:
            return self.default_for(device, parameters, embedding)
        recipe = self.get(name)
        if device not in recipe.devices:
            allowed = ", ".join(recipe.devices)
            raise UserInputError(f"recipe {name!r} is not for {device.upper()} (it is for: {allowed})")
        return recipe


def load_recipe_book() -> RecipeBook:
    """Read `convert/recipes.json`."""
    raw = read_json("convert", "recipes.json")
    recipes = {name: Recipe.from_dict({"name": name, **body}) for name, body in raw["recipes"].items()}
    # "measured" in recipes.json says why the defaults are what they are; it is for people.
    defaults = {
        device: [(rule.get("max_parameters"), rule["recipe"]) for rule in rules]
        for device, rules in raw["defaults"].items()
    }
    embedding_defaults = {device: str(name) for device, name in raw.get("embedding_defaults", {}).items()}
    for device in DEVICE_CLASSES:
        for _, name in defaults[device]:
            if device not in recipes[name].devices:
                raise AssertionError(f"recipes.json: default {name} is not valid for {device}")
    for device, name in embedding_defaults.items():
        if device not in recipes[name].devices:
            raise AssertionError(f"recipes.json: embedding default {name} is not valid for {device}")
    return RecipeBook(recipes, defaults, embedding_defaults)


def calibration_texts(name: str) -> list[str]:
    """The calibration prompts of set `name` (`convert/calibration-<name>.jsonl`, one JSON string a line)."""
    return [json.loads(line) for line in read_lines("convert", f"calibration-{name}.jsonl")]
