"""`presentable`: what a user sees of a library's exception: the sentence, never a file path."""

import pytest

from npu_engine.errors import presentable

OPENVINO = (
    "Exception from src/inference/src/cpp/core.cpp:112:\n"
    "Exception from src/inference/src/dev/plugin.cpp:53:\n"
    "Check 'temperature > 0' failed at /home/jenkins/agent/workspace/private-ci/ie/build-linux/b/"
    "repos/openvino.genai/src/cpp/src/generation_config.cpp:343:\n"
    "Temperature must be > 0 when do_sample is true\n"
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (OPENVINO, "Check 'temperature > 0' failed Temperature must be > 0 when do_sample is true"),
        ("model file /tmp/x/openvino_model.xml is missing", "model file is missing"),
        (r"cannot open C:\models\x\openvino_model.bin: denied", "cannot open denied"),
        ("see ~/.cache/npu/blob.bin", "see"),
        (
            "Ollama at http://127.0.0.1:11434/api/chat refused",
            "Ollama at http://127.0.0.1:11434/api/chat refused",
        ),
        ("this and/or that, 1/2 of it", "this and/or that, 1/2 of it"),
        ("/a/b.cpp:3:", "error"),
    ],
)
def test_paths_and_source_locations_are_dropped_and_the_sentence_kept(raw: str, shown: str) -> None:
    assert presentable(raw) == shown


def test_a_real_openvino_error_is_shown_without_its_paths() -> None:
    import openvino_genai

    config = openvino_genai.GenerationConfig(max_new_tokens=4)
    config.do_sample = True
    config.temperature = 1e-300  # 0 in float32
    with pytest.raises(RuntimeError) as raised:
        config.validate()
    assert ".cpp" in str(raised.value)  # what the runtime says: with its build paths
    shown = presentable(raised.value)
    assert "emperature" in shown and ".cpp" not in shown and "/" not in shown, shown
    assert presentable(RuntimeError("Exception from x/y.cpp:1:")) == "RuntimeError"
