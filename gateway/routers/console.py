"""The web console (docs/console.md): static ES modules and one CSS file, served by the gateway at `/`.

No build step. Assets live in `gateway/console/static/assets/` and are served under
`/console/assets/<version>/<name>`, where `<version>` is a hash of every asset's bytes: a changed file
changes the URL, so assets are cached for a year as immutable, and the modules' relative imports keep
the version. `index.html` (every page path of the single-page app) is `no-cache` and names the current
version. Every console response carries a strict Content-Security-Policy (no inline script or style)
and refuses framing. The console talks to the public API only.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.errors import ApiError

STATIC = Path(__file__).resolve().parent.parent / "console" / "static"
ASSETS = STATIC / "assets"
ASSET_PREFIX = "/console/assets"

# The single-page app's paths: each answers index.html; the page script picks the view from the path.
PAGES = ("/", "/signin", "/signup", "/account/verify-email", "/chat", "/keys", "/account",
         "/usage", "/finance", "/webhooks", "/team",
         "/requests", "/approvals", "/autonomy",
         "/account/forgot-password", "/account/reset-password", "/account/accept-invitation")
# Page paths with a parameter (also index.html; kept out of PAGES, whose paths are concrete).
PAGE_PATTERNS = ("/requests/{request_id}",)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
         ".txt": "text/plain; charset=utf-8"}


COMPRESSIBLE = (".js", ".css", ".svg", ".html", ".txt")


@dataclass(frozen=True)
class Bundle:
    version: str
    index: bytes
    files: dict[str, tuple[bytes, str]]  # name -> (bytes, content type)
    gzipped: dict[str, bytes]  # name -> gzip of the bytes (text assets only; "" is index.html)


def _gzip(data: bytes) -> bytes:
    # mtime=0: the same bytes give the same gzip (reproducible, and ETag-free caching stays exact)
    return gzip.compress(data, compresslevel=9, mtime=0)


def load_bundle(static: Path = STATIC) -> Bundle:
    assets = static / "assets"
    files: dict[str, tuple[bytes, str]] = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in assets.rglob("*") if p.is_file()):
        name = path.relative_to(assets).as_posix()
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + data + b"\0")
        kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files[name] = (data, kind)
    version = digest.hexdigest()[:16]
    index = (static / "index.html").read_bytes().replace(b"{{ASSETS}}", f"{ASSET_PREFIX}/{version}".encode())
    # compressed once per process, here, not per response (and no compression middleware on the API)
    gzipped = {name: _gzip(data) for name, (data, _) in files.items() if name.endswith(COMPRESSIBLE)}
    gzipped[""] = _gzip(index)
    return Bundle(version, index, files, gzipped)


_bundle: Bundle | None = None


def bundle() -> Bundle:
    global _bundle
    if _bundle is None:
        _bundle = load_bundle()
    return _bundle


router = APIRouter(include_in_schema=False)


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() not in ("gzip", "*"):
            continue
        q = params.replace(" ", "").removeprefix("q=") if params.strip().startswith("q") else "1"
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


def _answer(request: Request, name: str, data: bytes, kind: str, headers: dict[str, str]) -> Response:
    """The bytes, or their precomputed gzip when the client accepts it (`Vary: Accept-Encoding` either way)."""
    headers = {**headers, "Vary": "Accept-Encoding"}
    packed = bundle().gzipped.get(name)
    if packed is not None and _accepts_gzip(request):
        return Response(packed, media_type=kind, headers={**headers, "Content-Encoding": "gzip"})
    return Response(data, media_type=kind, headers=headers)


async def index(request: Request) -> Response:
    return _answer(request, "", bundle().index, "text/html; charset=utf-8",
                   {**SECURITY_HEADERS, "Cache-Control": "no-cache"})


for _page in PAGES + PAGE_PATTERNS:
    router.add_api_route(_page, index, methods=["GET"], include_in_schema=False)


@router.get(ASSET_PREFIX + "/{version}/{name:path}")
async def asset(version: str, name: str, request: Request) -> Response:
    current = bundle()
    found = current.files.get(name)
    if found is None or version != current.version:
        # an old version's URL is never answered with new bytes under an immutable cache header
        raise ApiError(404, "not_found", "no such console asset")
    data, kind = found
    return _answer(request, name, data, kind, {**SECURITY_HEADERS, "Cache-Control": IMMUTABLE})
