"""The Code Mode page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium), against the real server over the real SmolLM2 and Qwen2.5-Coder-0.5B: it loads with no
console errors, streams answers, highlights and checks code, sends `auto` or the chosen tier, and
asks for the API key once. A screenshot of each state goes to build/screenshots/."""

import json
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from npu_engine.engine import Engine
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from tests.conftest import BUILD
from tests.test_server import ServerThread

SCREENSHOTS = BUILD / "screenshots"
LAPTOP = (1366, 900)
PHONE = (390, 844)
API_KEY = "page-test-key"
# A canned answer rendered through the page's own renderer: a Python block that does not parse, a
# SQL statement that does not either, and one that does.
BROKEN = """Here is the function:

```python
def add(a, b)
    return a + b
```

and the query:

```sql
SELEC name FROM users WHERE id = 1;
```

```bash
for f in *.txt; do echo "$f"; done
```

An answer's own HTML is shown, never run: <img src="http://example.invalid/pixel.png" alt="pixel">
<script>window.pwned = 1</script><span style="color: red" onclick="window.pwned = 2">styled</span>
![pixel](http://example.invalid/markdown-pixel.png)
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        # scripts/test.sh installs them when it runs as root (as CI does); anyone else is told how.
        pytest.skip("chromium and chromium-driver are missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    # No network, as on a laptop offline: every host name but the test server's fails to resolve.
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    options.add_argument(f"--window-size={LAPTOP[0]},{LAPTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def page(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser at laptop width, light theme, with an empty page state (no key, no chats)."""
    browser.set_window_size(*LAPTOP)
    yield browser
    browser.get_log("browser")  # what a test left is not the next one's
    if browser.current_url.startswith("http"):
        browser.execute_script("localStorage.clear(); sessionStorage.clear();")


def open_page(browser: WebDriver, url: str) -> None:
    browser.get("about:blank")
    browser.get(url + "/")
    browser.execute_script("localStorage.clear(); sessionStorage.clear();")
    browser.get(url + "/")
    wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def wait(browser: WebDriver, condition: Callable[[WebDriver], Any], seconds: float = 30) -> Any:
    return WebDriverWait(browser, seconds, poll_frequency=0.05).until(condition)


def console_errors(browser: WebDriver, allowed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = browser.get_log("browser")
    return [
        e for e in entries if e["level"] == "SEVERE" and not any(text in e["message"] for text in allowed)
    ]


def phone(browser: WebDriver) -> None:
    """A phone's viewport (headless Chromium's windows are never narrower than 500 px)."""
    width, height = PHONE
    metrics = {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def shoot(browser: WebDriver, name: str) -> None:
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def panel_loaded(browser: WebDriver) -> None:
    wait(browser, lambda b: b.find_element(By.ID, "queue").get_attribute("data-depth") is not None)
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#plan li[data-tier]"))


def ask(browser: WebDriver, prompt: str, max_tokens: int) -> WebElement:
    """Type a prompt, send it with Enter, and wait for the finished answer (its meta line shown)."""
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(max_tokens))
    before = len(browser.find_elements(By.CSS_SELECTOR, ".message.assistant"))
    box = browser.find_element(By.ID, "prompt")
    box.click()
    box.send_keys(prompt)
    box.send_keys(Keys.ENTER)
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".message.assistant")) > before)
    answer: WebElement = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]
    try:
        wait(browser, lambda b: "streaming" not in (answer.get_attribute("class") or ""), seconds=300)
    except TimeoutException:
        shoot(browser, "timed-out")
        raise
    assert "error" not in (answer.get_attribute("class") or ""), answer.text
    return answer


def verified(browser: WebDriver, answer: WebElement) -> WebElement:
    badge: WebElement = wait(
        browser,
        lambda b: next(
            (x for x in answer.find_elements(By.CSS_SELECTOR, ".badge") if _done(x.get_attribute("class"))),
            None,
        ),
    )
    return badge


def _done(badge_class: str | None) -> bool:
    """A badge whose verification came back: verified, failed, or no receipt at all."""
    return bool({"verified", "failed", "unsigned"} & set((badge_class or "").split()))


def field(answer: WebElement, name: str) -> str:
    return answer.find_element(By.CSS_SELECTOR, f'.chip[data-field="{name}"] b').text


# -- no model answering: loading, rendering, checks, the key --------------------------------------


def test_the_page_loads_with_no_console_errors(page: WebDriver, served: ServerThread) -> None:
    open_page(page, served.url)
    panel_loaded(page)
    assert page.find_element(By.ID, "code-mode").is_selected()
    assert not page.find_element(By.ID, "model").is_enabled()  # Code Mode on: auto
    tiers = [o.get_attribute("value") for o in Select(page.find_element(By.ID, "model")).options]
    assert "code" in tiers and "fast" in tiers and "embed" not in tiers
    assert page.find_element(By.ID, "queue").get_attribute("data-depth") == "0"
    assert console_errors(page) == []
    shoot(page, "01-loaded")


def try_it_out(page: WebDriver, path: str) -> str:
    """Swagger UI's "Try it out" then "Execute" on the GET operation of `path`: the status shown."""
    page.find_element(By.CSS_SELECTOR, f".opblock-summary-path[data-path='{path}']").click()
    wait(page, lambda b: b.find_elements(By.CSS_SELECTOR, ".try-out__btn")).pop().click()
    wait(page, lambda b: b.find_elements(By.CSS_SELECTOR, ".btn.execute")).pop().click()
    answered = ".live-responses-table tbody .response-col_status"
    return str(wait(page, lambda b: b.find_elements(By.CSS_SELECTOR, answered))[0].text.strip())


def test_the_api_docs_render_offline_and_try_a_route(page: WebDriver, served: ServerThread) -> None:
    page.get(served.url + "/docs")
    wait(page, lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock"))
    summaries = page.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    paths = {summary.get_attribute("data-path") for summary in summaries}
    assert {"/health", "/metrics", "/v1/chat/completions", "/api/chat", "/v1/messages"} <= paths
    loaded = page.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(url.startswith(served.url + "/") for url in loaded), loaded
    # "Try it out" on /health: Swagger UI's own call gets past the page's CSP and the guard.
    assert try_it_out(page, "/health") == "200"
    shoot(page, "api-docs")
    assert console_errors(page) == []


def test_a_broken_block_shows_its_parse_failure(page: WebDriver, served: ServerThread) -> None:
    open_page(page, served.url)
    blocks = page.execute_script("return window.npuEngine.showAnswer(arguments[0], {})", BROKEN)
    assert blocks == 3
    # The answer's own HTML is text: no script ran, no element of its making, nothing fetched.
    assert page.execute_script("return window.pwned") is None
    answer = page.find_element(By.CSS_SELECTOR, ".message.assistant .body")
    assert not answer.find_elements(By.CSS_SELECTOR, "script, [onclick], [style], img[src]")
    assert "<script>window.pwned = 1</script>" in answer.text
    wait(page, lambda b: not b.find_elements(By.CSS_SELECTOR, ".quality li.check.unknown:not(.pass-at-1)"))
    python, sql, bash = page.find_elements(By.CSS_SELECTOR, ".code-block")
    # Highlighted by highlight.js: its classes on the code and on the tokens.
    code = python.find_element(By.CSS_SELECTOR, "pre code")
    assert "hljs" in (code.get_attribute("class") or "")
    assert python.find_elements(By.CSS_SELECTOR, "span.hljs-keyword")
    failed = python.find_element(By.CSS_SELECTOR, '.check.fail[data-check="parses (Python ast)"]')
    assert "line 1" in failed.text
    assert sql.find_element(By.CSS_SELECTOR, ".check.fail").text.count("syntax error") == 1
    assert bash.find_element(By.CSS_SELECTOR, '.check.ok[data-check="parses (bash -n)"]')
    # No answer, no tier: its pass@1 is not claimed.
    assert "not measured" in python.find_element(By.CSS_SELECTOR, ".pass-at-1").text
    assert console_errors(page) == []
    page.execute_script("arguments[0].scrollIntoView()", python)
    shoot(page, "02-quality-parse-failure")


def test_the_api_key_is_asked_once_then_kept(page: WebDriver, engine: Engine) -> None:
    app = create_app(engine, ServerConfig(api_key=API_KEY))
    with ServerThread(app) as keyed:
        page.get("about:blank")
        page.get(keyed.url + "/")  # the page itself loads without the key
        dialog = wait(page, lambda b: b.find_element(By.ID, "key-dialog"))
        wait(page, lambda b: dialog.get_attribute("open") is not None)
        shoot(page, "03-api-key-asked")
        key = page.find_element(By.ID, "key-input")
        key.send_keys("wrong", Keys.ENTER)
        wait(page, lambda b: b.find_element(By.ID, "key-error").is_displayed())
        key.send_keys(API_KEY, Keys.ENTER)
        wait(page, lambda b: dialog.get_attribute("open") is None)
        panel_loaded(page)
        assert "code" in [o.get_attribute("value") for o in Select(page.find_element(By.ID, "model")).options]
        assert page.execute_script("return sessionStorage.getItem('npu-engine.api-key')") == API_KEY
        # Kept for the tab: a reload asks no more.
        page.refresh()
        panel_loaded(page)
        assert page.find_element(By.ID, "key-dialog").get_attribute("open") is None
        refused = ("401 (Unauthorized)",)  # the browser logs each refused call; nothing else
        assert console_errors(page, refused) == []


def test_the_api_docs_ask_for_the_key_then_use_it(page: WebDriver, engine: Engine) -> None:
    app = create_app(engine, ServerConfig(api_key=API_KEY))
    with ServerThread(app) as keyed:
        page.get("about:blank")
        page.get(keyed.url + "/docs")  # a new origin, no key kept: the page loads, then asks for it
        asked = wait(page, lambda b: b.switch_to.alert)
        asked.send_keys(API_KEY)
        asked.accept()
        wait(page, lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock"))
        assert page.execute_script("return sessionStorage.getItem('npu-engine.api-key')") == API_KEY
        assert try_it_out(page, "/v1/models") == "200"  # "Try it out" sent the key too
        assert console_errors(page, ("401 (Unauthorized)",)) == []


def test_phone_width_and_dark_theme(page: WebDriver, served: ServerThread) -> None:
    open_page(page, served.url)
    page.execute_script("window.npuEngine.showAnswer(arguments[0], {})", BROKEN)
    page.find_element(By.ID, "theme").click()
    assert page.execute_script("return document.documentElement.dataset.theme") == "dark"
    assert page.find_element(By.ID, "hl-dark").get_attribute("media") == "all"
    shoot(page, "04-dark-laptop")
    phone(page)
    wait(page, lambda b: b.execute_script("return innerWidth") == PHONE[0])
    overflow = page.execute_script("return document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    # The engine panel waits off-screen, behind its button.
    off_screen = "return document.getElementById('engine').getBoundingClientRect().left >= innerWidth"
    wait(page, lambda b: b.execute_script(off_screen))
    shoot(page, "05-dark-phone")
    page.find_element(By.ID, "show-engine").click()
    on_screen = "return document.getElementById('engine').getBoundingClientRect().right <= innerWidth"
    wait(page, lambda b: b.execute_script(on_screen))  # slid all the way in
    shoot(page, "06-dark-phone-engine-panel")
    page.find_element(By.CSS_SELECTOR, "#engine .close-drawer").click()
    wait(page, lambda b: b.execute_script(off_screen))
    assert page.switch_to.active_element.get_attribute("id") == "show-engine"  # focus goes back
    page.execute_script("localStorage.removeItem('npu-engine.theme')")
    page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert console_errors(page) == []


# -- real models answering -------------------------------------------------------------------------


@pytest.mark.slow
def test_code_mode_sends_auto_and_shows_the_route(page: WebDriver, served: ServerThread) -> None:
    open_page(page, served.url)
    panel_loaded(page)
    answer = ask(page, "Write a Python function that adds two numbers.", 48)
    meta = answer.find_element(By.CSS_SELECTOR, ".meta")
    assert meta.get_attribute("data-asked") == "auto"
    assert meta.get_attribute("data-header-tier") == "auto"  # what the server received
    route = answer.find_element(By.CSS_SELECTOR, ".route")
    assert route.get_attribute("data-task") and route.get_attribute("data-tier") == field(answer, "tier")
    assert "confidence" in route.text and "why:" in route.text
    assert int(answer.get_attribute("data-pieces") or 0) > 1  # streamed, piece by piece
    assert field(answer, "model").startswith("smollm2-135m-instruct") and field(answer, "device") == "CPU"
    for name in ("backend", "decoding", "tokens/s", "first token", "fallback"):
        assert field(answer, name), name
    badge = verified(page, answer)
    assert "verified" in badge.text, badge.get_attribute("title")
    assert answer.find_element(By.CSS_SELECTOR, ".body").text.strip()
    # SmolLM2 answers this prompt with a fenced Python block: decorated, not re-rendered plain.
    assert answer.find_elements(By.CSS_SELECTOR, ".code-block pre code.hljs")
    # Kept in the browser: listed, and deletable.
    saved = page.execute_script("return localStorage.getItem('npu-engine.conversations')")
    assert saved and len(json.loads(saved)) == 1
    assert len(page.find_elements(By.CSS_SELECTOR, "#conversation-list li")) == 1
    assert console_errors(page) == []
    shoot(page, "07-smollm-code-mode-route")
    # Read back after a reload: the same answer, its checks kept, its receipt verified on a click.
    page.refresh()
    answer = wait(page, lambda b: b.find_element(By.CSS_SELECTOR, ".message.assistant"))
    badge = answer.find_element(By.CSS_SELECTOR, ".badge")
    assert badge.text == "attested: verify"
    assert answer.find_elements(By.CSS_SELECTOR, '.check.ok[data-check="parses (Python ast)"]')
    badge.click()
    assert "verified" in verified(page, answer).text
    page.find_element(By.CSS_SELECTOR, "#conversation-list .delete").click()
    wait(page, lambda b: not b.find_elements(By.CSS_SELECTOR, "#conversation-list li"))
    assert json.loads(page.execute_script("return localStorage.getItem('npu-engine.conversations')")) == {}


@pytest.mark.slow
def test_code_mode_off_sends_the_chosen_tier(page: WebDriver, served: ServerThread) -> None:
    open_page(page, served.url)
    panel_loaded(page)
    page.find_element(By.CSS_SELECTOR, "label.switch").click()
    assert not page.find_element(By.ID, "code-mode").is_selected()
    Select(page.find_element(By.ID, "model")).select_by_value("fast")
    Select(page.find_element(By.ID, "decoding")).select_by_value("plain")
    answer = ask(page, "Say hello.", 16)
    meta = answer.find_element(By.CSS_SELECTOR, ".meta")
    assert meta.get_attribute("data-asked") == "fast"
    assert meta.get_attribute("data-header-tier") == "fast"
    assert field(answer, "tier") == "fast" and field(answer, "decoding") == "plain"
    assert not answer.find_elements(By.CSS_SELECTOR, ".route")  # no router when a tier is chosen
    assert "verified" in verified(page, answer).text
    assert console_errors(page) == []
    shoot(page, "08-smollm-tier-chosen")


@pytest.mark.slow
def test_the_coder_model_streams_highlighted_checked_code(page: WebDriver, qwen_served: ServerThread) -> None:
    open_page(page, qwen_served.url)
    panel_loaded(page)
    answer = ask(page, "Write a Python function is_prime(n). Reply with the code only.", 160)
    assert int(answer.get_attribute("data-pieces") or 0) > 1
    # Code Mode: `auto`, routed by the rules to the code tier, the 0.5B here.
    assert answer.find_element(By.CSS_SELECTOR, ".meta").get_attribute("data-header-tier") == "auto"
    assert answer.find_element(By.CSS_SELECTOR, ".route").get_attribute("data-tier") == field(answer, "tier")
    assert field(answer, "model").startswith("qwen2.5-coder-0.5b-instruct")
    block = wait(page, lambda b: answer.find_element(By.CSS_SELECTOR, ".code-block"))
    assert "hljs" in (block.find_element(By.CSS_SELECTOR, "pre code").get_attribute("class") or "")
    assert block.find_elements(By.CSS_SELECTOR, "span.hljs-keyword")
    parses = wait(
        page, lambda b: block.find_element(By.CSS_SELECTOR, '.check[data-check="parses (Python ast)"]')
    )
    assert "ok" in (parses.get_attribute("class") or ""), parses.text
    assert block.find_element(By.CSS_SELECTOR, '.check[data-check="ruff"]')
    assert "not measured" in block.find_element(By.CSS_SELECTOR, ".pass-at-1").text  # no profile here
    badge = verified(page, answer)
    assert "verified" in badge.text, badge.get_attribute("title")
    assert console_errors(page) == []
    shoot(page, "09-qwen-code-mode-highlighted")
    page.set_window_size(1280, 1040)  # the whole answer, for the README
    page.execute_script("document.getElementById('messages').scrollTop = 0")
    shoot(page, "10-readme")
