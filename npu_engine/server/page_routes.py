"""The pages a browser is shown. The Code Mode page: `GET /` answers a browser with the page
(static/index.html) and any other client with the heartbeat line the Ollama CLI checks for. The
API docs: `GET /docs` is Swagger UI over /openapi.json (static/docs.html). /page/ serves both
pages' scripts, styles and vendored libraries, all from inside the package (no CDN: the laptop may
be offline).

The page and its files hold nothing private, so the guard lets them load without the API key;
every API call the page makes sends the key (it asks for it once, on a 401). /docs asks for the key
as /openapi.json, which it shows, does."""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

PAGE_PREFIX = "/page"
HEARTBEAT = "npu-engine is running"
# The pages run only their own files: no inline script, nothing from another origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_folder() -> Path:
    """The folder the page's files ship in, inside the package."""
    return Path(str(resources.files("npu_engine.server") / "static"))


def page_files() -> StaticFiles:
    """The page's files, to mount at PAGE_PREFIX."""
    return StaticFiles(directory=static_folder())


def page_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    page = (static_folder() / "index.html").read_text("utf-8")
    docs = (static_folder() / "docs.html").read_text("utf-8")

    @router.api_route("/", methods=["GET", "HEAD"], response_model=None)
    async def root(request: Request) -> Response:
        # The Ollama CLI checks its server with HEAD / before every command (Ollama answers 200);
        # a browser asks for HTML and gets the page.
        if "text/html" not in request.headers.get("accept", ""):
            return PlainTextResponse(HEARTBEAT)
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @router.api_route("/docs", methods=["GET", "HEAD"], response_model=None)
    async def api_docs() -> Response:
        return HTMLResponse(docs, headers=PAGE_HEADERS)

    return router
