"""The console's HTTP surface (no services needed): the pages and assets, their cache headers, the security
headers, and the rules the page keeps (no inline script or style, no CDN, no innerHTML)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from gateway.app import create_app
from gateway.routers.console import ASSETS, PAGES, bundle
from lotabots.settings import Settings

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    app = create_app(Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    # no lifespan: the console routes need no engine, broker or auth state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw.test") as c:
        yield c


def _security(r: httpx.Response) -> None:
    assert r.headers["content-security-policy"].startswith(CSP)
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.style_elements = 0
        self.bad_attributes: list[str] = []
        self.links: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.bad_attributes.append(f"{tag}[{name}]")
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
            self._in_script = True
        if tag == "style":
            self.style_elements += 1
        for key in ("src", "href"):
            if a.get(key):
                self.links.append(str(a[key]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


async def test_every_page_is_the_app_shell_with_strict_headers(client: httpx.AsyncClient) -> None:
    for path in PAGES:
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-cache"
        _security(r)
        page = _Page()
        page.feed(r.text)
        assert page.scripts and all(s.get("src") for s in page.scripts), "every script is an external file"
        assert not page.inline_script and not page.style_elements and not page.bad_attributes
        assert all(link.startswith("/") or link.startswith("#") for link in page.links), page.links  # no CDN


async def test_assets_are_versioned_and_immutable(client: httpx.AsyncClient) -> None:
    page = _Page()
    page.feed((await client.get("/")).text)
    version = bundle().version
    src = str(page.scripts[0]["src"])
    assert src == f"/console/assets/{version}/app.js"
    r = await client.get(src)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    _security(r)
    css = await client.get(f"/console/assets/{version}/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    # another version's URL never gets today's bytes under an immutable header
    stale = await client.get("/console/assets/0000000000000000/app.js")
    assert stale.status_code == 404 and stale.json()["error"]["code"] == "not_found"
    assert (await client.get(f"/console/assets/{version}/nope.js")).status_code == 404
    assert (await client.get(f"/console/assets/{version}/..%2Findex.html")).status_code == 404


async def test_console_routes_stay_out_of_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/console") or p in PAGES]


def test_the_scripts_keep_the_page_rules() -> None:
    for path in ASSETS.iterdir():
        if path.suffix not in {".js", ".css"}:
            continue
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org)", text), f"{path.name}: no URL of another origin"
        if path.suffix == ".js":
            # text from the API goes in as text nodes; tokens never touch web storage
            assert "innerHTML" not in text and "outerHTML" not in text and "insertAdjacentHTML" not in text, path.name
            assert "localStorage" not in text and "sessionStorage" not in text, path.name
            assert "eval(" not in text and "new Function" not in text, path.name
            assert ".style." not in text, path.name
