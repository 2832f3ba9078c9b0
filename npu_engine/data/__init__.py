"""Shipped data: conversion recipes (`convert/`), the model catalog (`models/`), bench sets (`bench/`).

In the source tree these folders sit at the top of the repository; installed, they live here.
"""

import json
import tomllib
from importlib import resources
from typing import Any


def read_json(package: str, name: str) -> Any:
    """Parse `name` from the data package `npu_engine.data.<package>`."""
    return json.loads(resources.files(f"npu_engine.data.{package}").joinpath(name).read_text("utf-8"))


def read_lines(package: str, name: str) -> list[str]:
    """The non-blank lines of a text file in the data package `npu_engine.data.<package>`."""
    text = resources.files(f"npu_engine.data.{package}").joinpath(name).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def read_toml(package: str, name: str) -> dict[str, Any]:
    """Parse the TOML file `name` from the data package `npu_engine.data.<package>`."""
    text = resources.files(f"npu_engine.data.{package}").joinpath(name).read_text("utf-8")
    return tomllib.loads(text)
