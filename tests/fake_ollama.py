"""A stand-in for an Ollama server on 127.0.0.1: `/api/chat` streaming NDJSON and `/api/version`
as Ollama's API documents them. A fake of a network peer we do not own; the engine under test is real."""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "0.12.3"  # what GET /api/version says


@contextmanager
def fake_ollama(
    models: dict[str, str], fail_after: int | None = None
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve `models` (tag -> reply text) and yield the base URL and the list of requests seen.
    With `fail_after`, the stream breaks off with an error line after that many words, as Ollama
    does when its runner dies mid-answer."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            if self.path != "/api/version":
                self.send_error(404)
                return
            payload = json.dumps({"version": VERSION}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, **body})
            if self.path != "/api/chat":
                self.send_error(404)
                return
            if body["model"] not in models:
                payload = json.dumps({"error": f"model '{body['model']}' not found"}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            words = models[body["model"]].split(" ")
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            for i, word in enumerate(words):
                if fail_after is not None and i == fail_after:
                    self.wfile.write(b'{"error":"llama runner process has terminated"}\n')
                    return
                piece = word if i == 0 else " " + word
                line = {
                    "model": body["model"],
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
                self.wfile.write((json.dumps(line) + "\n").encode())
                self.wfile.flush()
            final = {
                "model": body["model"],
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 12,
                "eval_count": len(words),
                "eval_duration": 50_000_000,
                "total_duration": 80_000_000,
            }
            self.wfile.write((json.dumps(final) + "\n").encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
