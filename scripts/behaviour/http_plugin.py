"""pytest plugin (`-p http_plugin`, this folder on PYTHONPATH): records every HTTP exchange of the
apps the tests build (see http_recorder.py), each under the node id of the test that made it.

`create_app` is patched at configure time, before any test module is collected and imports it."""

import importlib
import os
from collections.abc import Generator
from pathlib import Path

import pytest
from http_recorder import SINK_ENV, Sink, record_apps

APP_MODULE = "npu_engine.server.app"


def fuzz_bodies_independent_of_the_code() -> None:
    """Hypothesis draws string and number constants found in the source of the local modules
    loaded (npu_engine's, these scripts'), and schemathesis those of the app it is given: a
    refactor that adds or renames a constant would change the bodies the fuzz tests send, and so
    their answers. Neither side draws them: the bodies then depend only on the tests, the OpenAPI
    document and the seed."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # a hypothesis without local constants
        pass
    else:
        providers._get_local_constants = Constants
    try:
        from schemathesis.config import SchemathesisConfig
    except ImportError:
        return
    discover = SchemathesisConfig.discover

    def without_constants(cls: type[SchemathesisConfig]) -> SchemathesisConfig:
        config = discover()
        config.projects.default.analysis.constants.enabled = False
        return config

    SchemathesisConfig.discover = classmethod(without_constants)  # type: ignore[method-assign,assignment]


class CurrentTest:
    """Tells the sink which test runs now (its fixtures' requests included)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self.sink.test = item.nodeid
        try:
            return (yield)
        finally:
            self.sink.test = None


def pytest_configure(config: pytest.Config) -> None:
    folder = os.environ.get(SINK_ENV)
    if not folder:
        raise pytest.UsageError(f"http_plugin: ${SINK_ENV} names no folder to record into")
    tree = os.environ.get("NPU_BEHAVIOUR_TREE")
    module = importlib.import_module(APP_MODULE)
    if tree and not Path(module.__file__ or "").resolve().is_relative_to(Path(tree).resolve()):
        raise pytest.UsageError(f"http_plugin: {APP_MODULE} is {module.__file__}, not under {tree}")
    fuzz_bodies_independent_of_the_code()
    sink = record_apps(module, Path(folder))
    config.pluginmanager.register(CurrentTest(sink), "npu-behaviour-current-test")
