"""The console's vendored libraries and compressed assets (no services needed): the vendored files are the
pinned releases (their SHA-256 as recorded in VERSIONS.txt by scripts/vendor_console.sh) and use nothing the
CSP forbids; every text asset is answered gzipped when the client accepts it, with `Vary`, once computed."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.routers.console import ASSETS, bundle
from lotabots.settings import Settings

VENDORS = (ASSETS / "vendor", Path(__file__).parent / "vendor")


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    app = create_app(Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw.test") as c:
        yield c


@pytest.mark.parametrize("folder", VENDORS, ids=["console", "tests"])
def test_vendored_files_are_the_pinned_releases(folder: Path) -> None:
    lines = (folder / "VERSIONS.txt").read_text().splitlines()
    sums = [line.split() for line in lines if re.fullmatch(r"[0-9a-f]{64}  \S+", line)]
    assert sums, "VERSIONS.txt lists the files' SHA-256"
    for digest, name in sums:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert list(folder.glob("*LICENSE*")), "each vendored library ships with its licence"


def test_the_chart_library_needs_nothing_the_csp_forbids() -> None:
    text = (ASSETS / "vendor" / "uPlot.iife.min.js").read_text()
    for forbidden in ("eval(", "new Function", "innerHTML", "insertAdjacentHTML", 'setAttribute("style"',
                      "cssText", "localStorage"):
        assert forbidden not in text, forbidden


async def test_assets_are_gzipped_when_accepted_with_vary(client: httpx.AsyncClient) -> None:
    version = bundle().version
    for name in ("app.js", "console.css", "vendor/uPlot.iife.min.js"):
        url = f"/console/assets/{version}/{name}"
        packed = await client.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
        assert packed.headers["content-encoding"] == "gzip" and packed.headers["vary"] == "Accept-Encoding"
        assert packed.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert int(packed.headers["content-length"]) < len(bundle().files[name][0])
        assert packed.content == bundle().files[name][0]  # httpx decodes: the same bytes
        plain = await client.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.headers["vary"] == "Accept-Encoding"
        assert plain.content == bundle().files[name][0]
        refused = await client.get(url, headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
    page = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip" and page.headers["cache-control"] == "no-cache"
    assert gzip.decompress(bundle().gzipped[""]) == bundle().index
