"""How the HTTP server is set up, and the small parsers its settings and requests share."""

import math
import re
from dataclasses import dataclass, field

from npu_engine.errors import UserInputError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"
DEFAULT_PORT = 11435  # Ollama's is 11434: both can run side by side


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    # Names the Host header may carry besides loopback ones (DNS-rebinding defence).
    allowed_hosts: tuple[str, ...] = ()
    # Browser origins allowed by CORS; empty means local pages only.
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1 << 20
    max_new_tokens: int = 4096  # the most tokens one request may ask for
    idle_check_seconds: float = 30.0
    # Connections (see server/connections.py): at most this many open at once (also kept under
    # half the process's open-file limit); a client must send a request head within
    # header_timeout_seconds of connecting or of the last response, and its body within
    # body_timeout_seconds; an idle keep-alive connection is closed after
    # connection_keep_alive_seconds.
    max_connections: int = 1000
    header_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 30.0
    connection_keep_alive_seconds: float = 5.0
    log_lines_per_second: int = 10  # per logger and message kind; the rest are counted, not written
    # The access log (access_log.py) shows each request's prompt, escaped; never by default.
    log_prompts: bool = False
    version: str = "0.1.0"
    extra: dict[str, str] = field(default_factory=dict)

    def host_allowed(self, host_header: str) -> bool:
        name = host_header.strip().lower()
        if name.startswith("["):  # [::1]:port
            name = name[: name.find("]") + 1]
        elif name.count(":") == 1:
            name = name.rsplit(":", 1)[0]
        allowed = {*LOOPBACK_HOSTS, *(h.lower() for h in self.allowed_hosts)}
        if self.host not in ("0.0.0.0", "::"):
            allowed.add(self.host.lower())
        return name in allowed

    def origin_allowed(self, origin: str) -> bool:
        """A browser Origin allowed to call the API: an --allowed-origin, or (when none is given) a
        page on this machine, as CORS allows them."""
        if self.allowed_origins:
            return origin in self.allowed_origins or "*" in self.allowed_origins
        return re.fullmatch(LOCAL_ORIGINS, origin) is not None


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


# The longest keep_alive taken: far beyond any use, and well inside what a datetime can add (an
# expiry past the year 9999 made every later /api/ps fail).
MAX_KEEP_ALIVE_SECONDS = 10 * 365.25 * 24 * 3600
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: str | float | None) -> float | None:
    """Ollama's `keep_alive`: seconds as a number, or a Go duration ("5m", "1h30m"); a negative value
    keeps the model loaded (math.inf), 0 unloads it after the request; None: the server's default.
    Not a finite number, or over MAX_KEEP_ALIVE_SECONDS: UserInputError (a 400)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        negative = text.startswith("-")
        body = text.lstrip("+-")
        try:
            seconds = float(body)
        except ValueError:
            parts = _DURATION.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                raise UserInputError(
                    f"invalid keep_alive {value!r}: use seconds or a duration such as 5m"
                ) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
        seconds = -seconds if negative else seconds
    if not math.isfinite(seconds):
        raise UserInputError("invalid keep_alive: not a finite number")
    if seconds > MAX_KEEP_ALIVE_SECONDS:
        raise UserInputError(
            f"invalid keep_alive {value!r}: at most {MAX_KEEP_ALIVE_SECONDS:.0f} seconds (ten years); "
            "-1 keeps the model loaded"
        )
    return math.inf if seconds < 0 else seconds
