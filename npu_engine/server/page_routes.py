"""The Code Mode page: `GET /` answers a browser with the page (static/index.html) and any other
client with the heartbeat line the Ollama CLI checks for; /page/ serves the page's scripts, styles
and vendored libraries, all from inside the package (no CDN: the laptop may be offline).

The page and its files hold nothing private, so the guard lets them load without the API key;
every API call the page makes sends the key (it asks for it once, on a 401)."""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

PAGE_PREFIX = "/page"
HEARTBEAT = "npu-engine is running"
# The page runs only its own files: no inline script, nothing from another origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def static_folder() -> Path:
    """The folder the page's files ship in, inside the package."""
    return Path(str(resources.files("npu_engine.server") / "static"))


def page_files() -> StaticFiles:
    """The page's files, to mount at PAGE_PREFIX."""
    return StaticFiles(directory=static_folder())


def page_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    page = (static_folder() / "index.html").read_text("utf-8")

    @router.api_route("/", methods=["GET", "HEAD"], response_model=None)
    async def root(request: Request) -> Response:
        # The Ollama CLI checks its server with HEAD / before every command (Ollama answers 200);
        # a browser asks for HTML and gets the page.
        if "text/html" not in request.headers.get("accept", ""):
            return PlainTextResponse(HEARTBEAT)
        headers = {
            "Content-Security-Policy": PAGE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }
        return HTMLResponse(page, headers=headers)

    return router
