"""Interactive API docs at ``/docs``: Swagger UI served by the worker, no CDN.

Swagger UI 5 (it reads OpenAPI 3.1) comes from the npm package
``swagger-ui-dist``, pinned exactly in ``web/package-lock.json``. The page and
its files need no API key and answer while the worker is still starting, as
``/openapi.json`` does: they hold nothing but the document's viewer. The
Authorize button sends the key the caller types to the API (the document's
bearer scheme); ``persistAuthorization`` keeps it in the browser's storage.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from faust.web import Request, Response, View

from pipeline.api.errors import ApiError, not_found
from pipeline.app import app

PAGE_PATH = "/docs"
ASSETS_PATH = "/docs/assets/"
#: The routes of the document's viewer: not operations of the API itself.
ROUTES = (PAGE_PATH, ASSETS_PATH + "{name}")

#: swagger-ui-dist in a source checkout, where ``make install`` puts it (``npm
#: ci`` in ``web/``): ``make run``, the tests, an editable install.
CHECKOUT_ASSETS = (
    Path(__file__).resolve().parents[2] / "web" / "node_modules" / "swagger-ui-dist"
)
#: The same files for an install that is not a checkout, under the Python
#: prefix it is installed in: the Docker image copies them there from its
#: build stage (``/usr/local/share/notify-pipeline/swagger-ui``).
PREFIX_ASSETS = Path(sys.prefix) / "share" / "notify-pipeline" / "swagger-ui"
#: Looked up in this order: the first directory holding every file is served.
ASSET_DIRS: Sequence[Path] = (CHECKOUT_ASSETS, PREFIX_ASSETS)

JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
#: The files of swagger-ui-dist the page loads, with their types: nothing else
#: of the package is served (the Dockerfile copies exactly these).
PACKAGED: Mapping[str, str] = MappingProxyType(
    {
        "swagger-ui.css": CSS,
        "index.css": CSS,
        "swagger-ui-bundle.js": JAVASCRIPT,
        "swagger-ui-standalone-preset.js": JAVASCRIPT,
        "favicon-32x32.png": "image/png",
        "favicon-16x16.png": "image/png",
    }
)
#: Our initializer; the package's own points at a demo document elsewhere. A
#: file rather than an inline script, so the page's policy allows scripts from
#: this origin only.
INITIALIZER = "docs.js"
INITIALIZER_SOURCE = """\
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    // Relative to this origin: the page works behind any host name.
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    displayRequestDuration: true,
    // No badge fetched from the public validator: nothing leaves this origin.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
});
"""
#: Every name ``/docs/assets/{name}`` answers; anything else is a 404 before
#: the file system is looked at.
SERVED = frozenset({*PACKAGED, INITIALIZER})

#: Asset URLs carry a digest of their content, so a changed file is a new URL.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Scripts and styles from this origin only. Swagger UI sets style attributes
#: and draws icons from data: URIs; a downloaded response is a blob: URL.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Asset:
    """One file the page loads: its bytes, its type and a digest for its URL."""

    body: bytes
    content_type: str
    digest: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        """The asset holding ``body``."""
        return cls(body, content_type, hashlib.sha256(body).hexdigest()[:16])


def not_installed() -> ApiError:
    """503: the Swagger UI files are not where the worker looks for them."""
    return ApiError(
        503,
        "docs_not_installed",
        "the interactive docs' Swagger UI files (npm package swagger-ui-dist) are "
        "not installed: run `make install` (or `npm ci` in web/) in a checkout, "
        f"or copy them to {PREFIX_ASSETS} as the Dockerfile does; "
        "GET /openapi.json serves the API's document meanwhile",
    )


def installed_assets(
    directories: Sequence[Path] | None = None,
) -> Mapping[str, Asset] | None:
    """Every asset, from the first of ``directories`` holding all of swagger-ui's
    files (default ``ASSET_DIRS``); None if none does."""
    for directory in ASSET_DIRS if directories is None else directories:
        try:
            # Size and mtime name the installed version: a re-install is read
            # anew, an unchanged one comes from memory.
            stamp = tuple(
                (stat.st_size, stat.st_mtime_ns)
                for stat in (directory.joinpath(name).stat() for name in PACKAGED)
            )
            return _read_assets(directory, stamp)
        except OSError:
            continue  # not (or no longer wholly) installed there
    return None


@lru_cache(maxsize=4)
def _read_assets(
    directory: Path, stamp: tuple[tuple[int, int], ...]
) -> Mapping[str, Asset]:
    """The assets in ``directory``; ``stamp`` only keys the cache."""
    assets = {
        name: Asset.of(directory.joinpath(name).read_bytes(), content_type)
        for name, content_type in PACKAGED.items()
    }
    assets[INITIALIZER] = Asset.of(INITIALIZER_SOURCE.encode(), JAVASCRIPT)
    return MappingProxyType(assets)


def asset_url(name: str, assets: Mapping[str, Asset]) -> str:
    """The same-origin URL of asset ``name``, versioned by its content."""
    return f"{ASSETS_PATH}{name}?v={assets[name].digest}"


def docs_page(assets: Mapping[str, Asset]) -> str:
    """The HTML of ``/docs``: Swagger UI's files from this origin, started on
    ``/openapi.json``."""

    def url(name: str) -> str:
        return asset_url(name, assets)

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>notify-pipeline API</title>
  <link rel="stylesheet" href="{url("swagger-ui.css")}">
  <link rel="stylesheet" href="{url("index.css")}">
  <link rel="icon" type="image/png" sizes="32x32" href="{url("favicon-32x32.png")}">
  <link rel="icon" type="image/png" sizes="16x16" href="{url("favicon-16x16.png")}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{url("swagger-ui-bundle.js")}"></script>
  <script src="{url("swagger-ui-standalone-preset.js")}"></script>
  <script src="{url(INITIALIZER)}"></script>
</body>
</html>
"""


@app.page(PAGE_PATH)
class DocsPage(View):
    """Swagger UI on this API's document (no key needed, answers while starting)."""

    async def get(self, request: Request) -> Response:
        """The page; 503 naming the fix if Swagger UI's files are not installed."""
        assets = installed_assets()
        if assets is None:
            error = not_installed()
            return self.json(error.body(), status=error.status)
        return self.html(docs_page(assets), headers=dict(PAGE_HEADERS))


@app.page(ROUTES[1])
class DocsAsset(View):
    """One file of the docs page, from the allow-list (no key needed)."""

    async def get(self, request: Request, name: str) -> Response:
        """The file with its type, cacheable for a year; 404 if not on the list."""
        if name not in SERVED:
            error = not_found("no such docs asset")
            return self.json(error.body(), status=error.status)
        assets = installed_assets()
        if assets is None:
            error = not_installed()
            return self.json(error.body(), status=error.status)
        asset = assets[name]
        return self.bytes(
            asset.body,
            headers={
                "Content-Type": asset.content_type,
                "Cache-Control": IMMUTABLE,
                "X-Content-Type-Options": "nosniff",
            },
        )
