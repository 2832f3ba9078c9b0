"""From raw records (http_recorder.py) and command output to artefacts that two runs of the same
code reproduce byte for byte. Only what varies between runs of the same code is normalised:

- Timing: `ms per decision` in the router's report; in HTTP bodies the values of `created`,
  `created_at`, `modified_at`, `expires_at` (but Ollama's "never", 0001-01-01, is kept), of
  `total_duration`, `load_duration`, `prompt_eval_duration`, `eval_duration`, and every float
  (tokens/s and the like; the app's other figures are integers or strings).
- Random ids: `chatcmpl-…`/`cmpl-…` ids, request ids in 500 messages; the response headers date,
  server, x-request-id, and content-length (it follows the masked values' digits).
- Per-run paths: pytest's temporary folders and the tree under test (no body carries one today:
  the app keeps paths out of its answers; this only keeps such a regression readable).
- Not generated text: greedy answers (the default) are the same every run, and so are sampled ones
  (temperature > 0), seeded or not: OpenVINO GenAI's GenerationConfig.rng_seed defaults to 0 and
  each request starts from its seed. Every answer is compared word for word.
- A client that left mid-answer (the disconnect tests): how much was generated before the server
  noticed depends on timing, so only the status and headers are kept.
- Concurrent bursts (the queue tests): which of N simultaneous requests the bounded queue admits,
  and so how many get 200 and how many 503, depends on timing. Exchanges of a test that overlap in
  time form a burst; a burst is compared as its set of distinct exchanges, sorted, each once.
  Sequential exchanges keep their order."""

import base64
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DROPPED_HEADERS = {"date", "server", "x-request-id", "content-length"}
# Request headers the answer depends on (CORS, the API key, the Host check); the rest are the client's.
REQUEST_HEADERS = (
    "host",
    "origin",
    "authorization",
    "x-api-key",
    "access-control-request-method",
    "access-control-request-headers",
)
PORT = re.compile(r":\d+$")
TIME_KEYS = {"created", "created_at", "modified_at", "expires_at"}
DURATION_KEYS = {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"}
NEVER = "0001-01-01T00:00:00Z"  # Ollama's keep_alive -1: a value, not a moment
LONG_REQUEST = 2000  # request bodies past this many bytes are recorded as their size and digest
COMPLETION_ID = re.compile(r"^(chatcmpl-|cmpl-)[0-9a-f]+$")
REQUEST_ID = re.compile(r"request id [0-9a-f]{16}")
PYTEST_TMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/")
DECISION_TIME = re.compile(r", \d+(\.\d+)? ms per decision")
Json = Any


def routing_report(text: str) -> str:
    """The router's report without its timing figures."""
    return DECISION_TIME.sub("", text)


class Scrubber:
    """Normalises values in response bodies (see the module docstring)."""

    def __init__(self, tree: Path) -> None:
        self.tree = str(tree.resolve())

    def text(self, value: str) -> str:
        value = REQUEST_ID.sub("request id <id>", value)
        value = PYTEST_TMP.sub("<pytest-tmp>/", value)
        return value.replace(self.tree, "<tree>")

    def value(self, value: Json, key: str = "") -> Json:
        if key in TIME_KEYS and value != NEVER:
            return "<time>"
        if key in DURATION_KEYS:
            return "<duration>"
        if isinstance(value, dict):
            return {k: self.value(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, float):
            return "<float>"
        if isinstance(value, str):
            found = COMPLETION_ID.match(value)
            return found.group(1) + "<id>" if found else self.text(value)
        return value


def _json_or_text(data: bytes | str) -> Json:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data


def _events(content_type: str, body: bytes) -> Json:
    """A body as data: parsed JSON, a list of events for SSE and NDJSON streams, else text."""
    text = body.decode("utf-8", "backslashreplace")
    if content_type.startswith("text/event-stream"):
        events = []
        for block in text.split("\n\n"):
            lines = [_json_or_text(line.removeprefix("data: ")) for line in block.splitlines() if line]
            if lines:
                events.append(lines[0] if len(lines) == 1 else lines)
        return {"events": events}
    if content_type.startswith("application/x-ndjson"):
        return {"events": [_json_or_text(line) for line in text.splitlines() if line.strip()]}
    if content_type.startswith("application/json"):
        return _json_or_text(body)
    return text


def _decoded(chunks: list[str]) -> bytes:
    return b"".join(base64.b64decode(chunk) for chunk in chunks)


def exchange(raw: dict[str, Any], scrub: Scrubber) -> dict[str, Any]:
    """One raw record as a normalised exchange: request, status, headers and response."""
    body = _decoded(raw["request_body"])
    request = _json_or_text(body) if body else None
    if len(body) > LONG_REQUEST:
        request = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    asked = {name.lower(): value for name, value in raw["request_headers"]}
    if "host" in asked:  # servers in threads and subprocesses listen on a free port
        asked["host"] = PORT.sub(":<port>", asked["host"])
    headers: dict[str, list[str]] = {}
    for name, value in raw["headers"]:
        if name.lower() not in DROPPED_HEADERS:
            headers.setdefault(name.lower(), []).append(scrub.text(value))
    response: Json
    if raw["client_left"]:
        response = "<the client left before the end>"
    else:
        content_type = headers.get("content-type", [""])[0]
        response = scrub.value(_events(content_type, _decoded(raw["response_body"])))
    return {
        "method": raw["method"],
        "path": raw["path"],
        "request_headers": {h: asked[h] for h in REQUEST_HEADERS if h in asked},
        "request": request,
        "status": raw["status"],
        "headers": dict(sorted(headers.items())),
        "response": response,
    }


def _canonical(value: Json) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def _bursts(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records (sorted by start) in groups of those that overlap in time."""
    groups: list[list[dict[str, Any]]] = []
    end = -1
    for record in records:
        if groups and record["started_ns"] < end:
            groups[-1].append(record)
        else:
            groups.append([record])
        end = max(end, record["ended_ns"])
    return groups


def read_raw(folder: Path) -> list[dict[str, Any]]:
    """Every raw record written into `folder` by any process."""
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        with path.open(encoding="ascii") as lines:
            records += [json.loads(line) for line in lines if line.strip()]
    return records


def http_lines(records: Iterable[dict[str, Any]], tree: Path) -> list[str]:
    """Normalised exchanges as JSON lines: tests in the order they ran, a test's sequential
    exchanges in order, a burst of concurrent ones as its sorted set of distinct exchanges."""
    scrub = Scrubber(tree)
    by_test: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: (r["started_ns"], r["pid"])):
        by_test.setdefault(record["test"], []).append(record)
    lines = []
    for test, recorded in by_test.items():
        for burst in _bursts(recorded):
            exchanges = [exchange(raw, scrub) for raw in burst]
            if len(burst) > 1:
                distinct = {_canonical(e): e for e in exchanges}
                exchanges = [{**distinct[key], "burst": True} for key in sorted(distinct)]
            lines += [json.dumps({"test": test, **e}, ensure_ascii=True) for e in exchanges]
    return lines
