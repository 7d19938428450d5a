"""Real-browser fixtures: headless Chromium driven by Selenium, and a loopback server for it.

Debian's `chromium` and `chromium-driver` (tests/setup/browser.sh installs them; `make test`
runs it) are driven by Selenium through the chromedriver found on $PATH, so Selenium
Manager never looks for, or downloads, a browser of its own.

- `browser`: a `Browser` at `window_size` (default 1280x800; parametrize `window_size` or call
  `browser.resize(w, h)`), with `goto`, `find`, `screenshot(name)` -> test-artifacts/
  screenshots/<test>/<name>.png, and `.driver` for anything else Selenium does. One Chromium
  per test worker, reset between tests (cookies, storage, blank page). Every host except
  127.0.0.1 and localhost resolves to nothing: a test never reaches the internet.
- `serve`: `serve(app_or_folder) -> LiveServer`, any ASGI app (or a folder, served as static
  files) under uvicorn in a thread on 127.0.0.1 and a free port; `.url("/path")`. For an app
  that must know its own address, `serve(factory=lambda base_url: make_app(base_url))`: the
  port is bound first. Stopped at teardown.

A missing browser skips the test with the reason, except under CI=true, where it fails
naming tests/setup/browser.sh. On a failing browser test, the page's screenshot and HTML go
to the test's artefact folder as failure.png and failure.html.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = ROOT / "tests" / "setup" / "browser.sh"
ARTIFACTS = Path(os.environ.get("SYNDICATE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
DEFAULT_WINDOW = (1280, 800)
PAGE_LOAD_TIMEOUT = 15  # seconds; pages here come from loopback
SERVER_START_TIMEOUT = 10

Size = tuple[int, int]


def browser_required() -> bool:
    """Under CI=true a browser test must run: a missing browser fails it, never skips it."""
    return os.environ.get("CI", "").lower() == "true"


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths from $PATH, or None if either is missing."""
    chromium = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    chromedriver = shutil.which("chromedriver")
    return (chromium, chromedriver) if chromium and chromedriver else None


def _install_browser() -> str:
    """Run the setup script once across test workers (it installs only as root with apt-get)."""
    lock = Path(tempfile.gettempdir()) / "syndicate-browser-setup.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two xdist workers must not run apt-get at once
        if find_browser():
            return ""
        done = subprocess.run(
            ["sh", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
        )
        return (done.stdout + done.stderr).strip()


def require_browser() -> tuple[str, str]:
    """The browser's paths; else skip, or under CI=true install it, and fail if that can't."""
    found = find_browser()
    if found is None and browser_required():
        output = _install_browser()
        found = find_browser()
        if found is None:
            pytest.fail(
                "browser tests need chromium and chromedriver under CI=true, and "
                f"tests/setup/browser.sh (run by `make test`) could not provide them:\n{output}",
                pytrace=False,
            )
    if found is None:
        pytest.skip(
            "chromium or chromedriver not found: run tests/setup/browser.sh as root "
            "(apt-get install chromium chromium-driver)"
        )
    return found


@pytest.fixture(scope="session")
def browser_paths() -> tuple[str, str]:
    return require_browser()


def _artefact_folder(item: pytest.Item) -> Path:
    """test-artifacts/screenshots/<file>__<test>[<params>], safe as one folder name."""
    name = item.nodeid.removeprefix("tests/").replace("::", "__").replace("/", "__")
    return ARTIFACTS / "screenshots" / re.sub(r"[^\w.\[\]=,+-]", "_", name)


@dataclass
class Browser:
    """One headless Chromium for one test. Raw Selenium is at `.driver`."""

    driver: WebDriver
    folder: Path  # this test's screenshot folder
    screenshots: list[Path] = field(default_factory=list)

    def resize(self, width: int, height: int) -> None:
        """Make the viewport (window.innerWidth x innerHeight) exactly width x height."""
        self.driver.set_window_size(width, height)
        inner = tuple(self.js("return [window.innerWidth, window.innerHeight]"))
        if inner != (width, height):
            # Chromium keeps desktop windows at least ~500 px wide; emulate the viewport then.
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        else:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    @property
    def viewport(self) -> Size:
        width, height = self.js("return [window.innerWidth, window.innerHeight]")
        return width, height

    def goto(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> WebElement:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, timeout: float = 5) -> WebElement:
        """The first element matching css, once it is present and displayed."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
        )

    @property
    def url(self) -> str:
        return self.driver.current_url

    @property
    def title(self) -> str:
        return self.driver.title

    def horizontal_overflow(self) -> int:
        """How many CSS pixels the page is wider than the viewport (0: no horizontal scroll)."""
        return self.js(
            "return Math.max(document.documentElement.scrollWidth,"
            " document.body ? document.body.scrollWidth : 0) - window.innerWidth"
        )

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        """Save <artefacts>/screenshots/<test>/<name>.png: the whole page, or the viewport."""
        path = self.folder / (re.sub(r"[^\w.-]", "_", name) + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        if full_page:
            width, height = self.js(
                "const e = document.documentElement;"
                "return [Math.max(e.scrollWidth, window.innerWidth),"
                " Math.max(e.scrollHeight, window.innerHeight)]"
            )
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                },
            )
            path.write_bytes(base64.b64decode(shot["data"]))
        else:
            self.driver.save_screenshot(str(path))
        self.screenshots.append(path)
        return path


def _start_chromium(paths: tuple[str, str]) -> WebDriver:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",  # screenshots and innerWidth without a scrollbar's width
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=en-GB",
        # Hermetic: every host but loopback fails at once (no DNS waits, no outside fetches).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        f"--window-size={DEFAULT_WINDOW[0]},{DEFAULT_WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    return driver


class _Chromium:
    """One Chromium per test worker (starting one costs ~0.5 s), started again if it died."""

    def __init__(self, paths: tuple[str, str]) -> None:
        self.paths = paths
        self.driver: WebDriver | None = None

    def get(self) -> WebDriver:
        if self.driver is not None:
            try:
                self.driver.execute_script("return 1")
                return self.driver
            except Exception:  # crashed or hung up: start a fresh one
                self.quit()
        self.driver = _start_chromium(self.paths)
        return self.driver

    def quit(self) -> None:
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.quit()
            self.driver = None


@pytest.fixture(scope="session")
def _chromium(browser_paths: tuple[str, str]) -> Iterator[_Chromium]:
    chromium = _Chromium(browser_paths)
    try:
        yield chromium
    finally:
        chromium.quit()


@pytest.fixture
def window_size() -> Size:
    """The `browser` viewport; override with @pytest.mark.parametrize("window_size", [...])."""
    return DEFAULT_WINDOW


@pytest.fixture
def browser(
    _chromium: _Chromium, window_size: Size, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    """A headless Chromium at window_size, on a blank page with no cookies."""
    folder = _artefact_folder(request.node)
    shutil.rmtree(folder, ignore_errors=True)  # only this run's screenshots
    driver = _chromium.get()
    page = Browser(driver, folder)
    page.resize(*window_size)
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                page.screenshot("failure", full_page=False)
                (folder / "failure.html").write_text(driver.page_source, encoding="utf-8")
        # Reset for the next test on this worker: a blank page, no cookies (cookies ignore
        # ports; other storage is per origin, and each `serve` gets a new port).
        for command in ("Network.clearBrowserCookies", "Emulation.clearDeviceMetricsOverride"):
            with contextlib.suppress(Exception):
                driver.execute_cdp_cmd(command, {})
        with contextlib.suppress(Exception):
            driver.get("about:blank")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, so `browser` can tell a failure at teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using `browser` is marked `browser` (select or deselect with -m)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


# --- a loopback server -----------------------------------------------------------------


def static_app(folder: Path) -> Any:
    """A Starlette app serving folder's files (index.html for a folder's URL)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/", StaticFiles(directory=folder, html=True))])


class LiveServer:
    """An ASGI app under uvicorn in a thread, on 127.0.0.1 and a port the OS picked."""

    def __init__(
        self,
        app: Any = None,
        *,
        factory: Callable[[str], Any] | None = None,
        **uvicorn_options: Any,
    ) -> None:
        """app: an ASGI app; or factory(base_url) -> app, for an app that must know its own
        address (the links in the emails it sends), called once the port is bound."""
        import uvicorn

        if (app is None) == (factory is None):
            raise TypeError("LiveServer takes an app or a factory, not both")

        options: dict[str, Any] = {
            "log_level": "warning",
            "lifespan": "auto",
            "timeout_graceful_shutdown": 2,  # a browser's keep-alive must not hold teardown
        }
        options.update(uvicorn_options)
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))  # bound before the thread starts: no port race
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        if factory is not None:
            try:
                app = factory(self.base_url + "/")
            except BaseException:
                self._socket.close()
                raise
        self._server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])  # no signal handlers off the main thread
        except BaseException as exc:  # SystemExit from a failed startup included
            self._error = exc

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the app under test did not start on {self.base_url}"
                    + (f": {self._error!r}" if self._error else " (see the log above)")
                )
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            pass  # accepting connections
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """serve(app_or_folder) or serve(factory=lambda base_url: app) -> a started LiveServer,
    stopped at teardown; extra keywords go to uvicorn.Config."""
    servers: list[LiveServer] = []

    def start(
        app: Any = None, *, factory: Callable[[str], Any] | None = None, **uvicorn_options: Any
    ) -> LiveServer:
        if isinstance(app, str | os.PathLike):
            app = static_app(Path(app))
        server = LiveServer(app, factory=factory, **uvicorn_options)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()
