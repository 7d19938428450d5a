"""The browser test fixtures themselves: the loopback server, the browser, the CI rule."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests import browser as fixtures
from tests.browser import Browser, LiveServer

Serve = Callable[..., LiveServer]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    site = tmp_path / "static"
    (site / "notes").mkdir(parents=True)
    (site / "index.html").write_text(
        "<!doctype html><title>Home</title><h1 id=greeting>Hello, browser</h1>"
        '<p><a href="/notes/">Notes</a></p>',
        encoding="utf-8",
    )
    (site / "notes" / "index.html").write_text(
        "<!doctype html><title>Notes</title><p id=tall style='height:3000px'>Long</p>",
        encoding="utf-8",
    )
    (site / "wide.html").write_text(
        "<!doctype html><title>Wide</title><div style='width:600px'>Too wide</div>",
        encoding="utf-8",
    )
    return site


# --- the server, over plain HTTP (no browser needed) ------------------------------------


def test_serve_a_folder_on_loopback(serve: Serve, folder: Path) -> None:
    server = serve(folder)
    assert server.base_url.startswith("http://127.0.0.1:")
    home = httpx.get(server.url("/"))
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    assert "Hello, browser" in home.text
    assert "Long" in httpx.get(server.url("notes/")).text
    assert httpx.get(server.url("/missing.html")).status_code == 404


def test_serve_any_asgi_app_with_its_lifespan(serve: Serve) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} {request.url.path}")

    app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"])], lifespan=lifespan)
    with LiveServer(app) as server:
        assert events == ["startup"]
        assert httpx.post(server.url("/echo")).text == "POST /echo"
        # Two servers at once get two ports.
        other = serve(app)
        assert other.port != server.port
        assert httpx.get(other.url("/echo")).text == "GET /echo"
    assert events[:2] == ["startup", "startup"] and "shutdown" in events
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url("/echo"))  # stopped: the port is closed


def test_an_app_can_be_made_knowing_its_own_address(serve: Serve) -> None:
    def make_app(base_url: str) -> Starlette:
        async def home(request: Request) -> PlainTextResponse:
            return PlainTextResponse(f"links start with {base_url}")

        return Starlette(routes=[Route("/", home)])

    server = serve(factory=make_app)
    assert httpx.get(server.url()).text == f"links start with {server.base_url}/"
    with pytest.raises(TypeError):
        serve(make_app(""), factory=make_app)


def test_an_app_that_fails_to_start_is_reported(serve: Serve) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("SYNDICATE_SECRET is not set")
        yield

    with pytest.raises(RuntimeError, match="did not start"):
        serve(Starlette(lifespan=lifespan), lifespan="on")


# --- the CI rule: never a silent skip ----------------------------------------------------


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fixtures, "find_browser", lambda: None)
    monkeypatch.setattr(fixtures, "_install_browser", lambda: "E: Unable to locate package")

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"tests/setup/browser\.sh") as failed:
        fixtures.require_browser()
    assert "Unable to locate package" in str(failed.value)

    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium or chromedriver not found"):
        fixtures.require_browser()


# --- the browser -------------------------------------------------------------------------


@pytest.mark.parametrize("window_size", [(375, 700), (1024, 768)], ids=["phone", "desktop"])
def test_browser_opens_a_served_page_at_its_window_size(
    browser: Browser, serve: Serve, folder: Path, window_size: tuple[int, int]
) -> None:
    server = serve(folder)
    browser.goto(server.url("/"))
    assert browser.title == "Home"
    assert browser.viewport == window_size
    assert browser.find("#greeting").text == "Hello, browser"
    assert browser.horizontal_overflow() <= 0
    browser.goto(server.url("/wide.html"))
    assert browser.horizontal_overflow() == max(0, 600 + 8 - window_size[0])  # body margin 8

    browser.goto(server.url("/"))
    browser.find("a").click()
    browser.wait_for("#tall")
    assert browser.url == server.url("/notes/")

    page = browser.screenshot("notes")  # the whole page
    view = browser.screenshot("notes-viewport", full_page=False)
    assert page == browser.folder / "notes.png"
    assert page.parent.parent == fixtures.ARTIFACTS / "screenshots"
    width, height = png_size(page)
    assert width == window_size[0] and height >= 3000
    assert png_size(view)[0] == window_size[0]


def test_browser_reaches_no_host_but_loopback(browser: Browser) -> None:
    with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
        browser.goto("https://reelnotes.example.com/")
