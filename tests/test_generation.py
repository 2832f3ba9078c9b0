"""The checks every request passes before a backend sees it: each value OpenVINO GenAI would refuse
(or choke on) is a UserInputError naming the field."""

import pytest

from npu_engine.errors import UserInputError
from npu_engine.generation import (
    MAX_STOP_BYTES,
    MAX_STOP_SEQUENCES,
    SamplingOptions,
    validate_messages,
)

REFUSED = [
    ({"temperature": 1e-300}, "temperature"),  # 0 in float32
    ({"temperature": 1e-40}, "temperature"),  # logits / temperature overflow float32
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": "0.5"}, "temperature"),
    ({"top_p": 1e-300}, "top_p"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": float("nan")}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"),
    ({"max_new_tokens": 2**64}, "max_new_tokens"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": tuple(f"s{i}" for i in range(50_000))}, "stop"),
    ({"stop": tuple("ab" for _ in range(MAX_STOP_SEQUENCES + 1))}, "stop"),
    ({"stop": ("x" * (MAX_STOP_BYTES + 1),)}, "stop"),
    ({"stop": ("é" * (MAX_STOP_BYTES // 2 + 1),)}, "stop"),  # bytes, not characters
    ({"stop": ("",)}, "stop[0]"),
    ({"stop": ("ok", "\ud800")}, "stop[1]"),
]


@pytest.mark.parametrize(("fields", "named"), REFUSED)
def test_sampling_values_a_backend_cannot_take_are_refused_by_name(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(UserInputError) as refused:
        SamplingOptions(**fields).validate()  # type: ignore[arg-type]
    assert str(refused.value).startswith(named)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"temperature": 0.0, "top_p": 1.0},
        {"temperature": 1e-6, "top_p": 1e-6},
        {"temperature": 2, "top_p": 1, "seed": 0},
        {"seed": 2**63 - 1, "max_new_tokens": 1},
        {"stop": tuple("ab" for _ in range(MAX_STOP_SEQUENCES))},
        {"stop": ("x" * MAX_STOP_BYTES,)},
    ],
)
def test_sampling_values_within_the_limits_pass(fields: dict[str, object]) -> None:
    options = SamplingOptions(**fields)  # type: ignore[arg-type]
    assert options.validate() is options


def test_messages_with_text_that_is_not_unicode_are_refused_by_name() -> None:
    validate_messages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo 🙂"}])
    with pytest.raises(UserInputError, match=r"^messages\[1\]\.content .*surrogate at character 3"):
        validate_messages([{"role": "user", "content": "ok"}, {"role": "user", "content": "abc\ud800"}])
    with pytest.raises(UserInputError, match=r"^messages\[0\]\.content must be a string"):
        validate_messages([{"role": "user", "content": None}])  # type: ignore[dict-item]
