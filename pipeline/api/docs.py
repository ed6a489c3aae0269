"""Interactive API docs at ``/docs``: Swagger UI served by the worker, no CDN.

Swagger UI 5 (it reads OpenAPI 3.1) comes from the npm package
``swagger-ui-dist``, pinned exactly in ``web/package-lock.json``. The page and
its files need no API key and answer while the worker is still starting, as
``/openapi.json`` does: they hold nothing but the document's viewer. The
Authorize button sends the key the caller types to the API (the document's
bearer scheme); ``persistAuthorization`` keeps it in the browser's storage.

The way its files are found, read and served (an allow-list, a digest in
each URL, a strict content security policy) is shared with the dashboard's
page (`pipeline.api.dashboard`): `read_installed`, `InstalledPage`, `PageView`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

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
#: What every page of the worker allows: scripts from this origin only, no
#: plugin, no <base>, no framing.
BASE_POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)


def page_headers(*policy: str) -> dict[str, str]:
    """The headers of a page: never cached stale, ``BASE_POLICY`` plus
    ``policy`` as its content security policy, no type sniffing."""
    return {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": "; ".join((*BASE_POLICY, *policy)),
        "X-Content-Type-Options": "nosniff",
    }


#: Swagger UI sets style attributes and draws icons from data: URIs; a
#: downloaded response is a blob: URL.
PAGE_HEADERS = page_headers(
    "style-src 'self' 'unsafe-inline'", "img-src 'self' data: blob:"
)
CONTENT_SECURITY_POLICY = PAGE_HEADERS["Content-Security-Policy"]


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


def read_installed(
    installs: Iterable[Mapping[str, Path]], types: Mapping[str, str]
) -> Mapping[str, Asset] | None:
    """The files ``types`` names (name → content type), read from the first of
    ``installs`` (name → where that file is) holding every one; None if none does."""
    for files in installs:
        try:
            # Size and mtime name the installed version: a re-install is read
            # anew, an unchanged one comes from memory.
            stamp = tuple(
                (stat.st_size, stat.st_mtime_ns)
                for stat in (files[name].stat() for name in types)
            )
            listed = tuple((name, files[name], types[name]) for name in types)
            return _read_files(listed, stamp)
        except OSError:
            continue  # not (or no longer wholly) installed there
    return None


@lru_cache(maxsize=8)
def _read_files(
    files: tuple[tuple[str, Path, str], ...], stamp: tuple[tuple[int, int], ...]
) -> Mapping[str, Asset]:
    """The assets ``files`` lists as (name, path, type); ``stamp`` only keys
    the cache."""
    return MappingProxyType(
        {name: Asset.of(path.read_bytes(), kind) for name, path, kind in files}
    )


#: Our initializer as served.
INITIALIZER_ASSET = Asset.of(INITIALIZER_SOURCE.encode(), JAVASCRIPT)


def installed_assets(
    directories: Sequence[Path] | None = None,
) -> Mapping[str, Asset] | None:
    """Every asset, from the first of ``directories`` holding all of swagger-ui's
    files (default ``ASSET_DIRS``); None if none does."""
    found = read_installed(
        (
            {name: directory / name for name in PACKAGED}
            for directory in (ASSET_DIRS if directories is None else directories)
        ),
        PACKAGED,
    )
    if found is None:
        return None
    return MappingProxyType({**found, INITIALIZER: INITIALIZER_ASSET})


def versioned_url(base: str, name: str, assets: Mapping[str, Asset]) -> str:
    """The same-origin URL of asset ``name`` under ``base``, versioned by its
    content."""
    return f"{base}{name}?v={assets[name].digest}"


def asset_url(name: str, assets: Mapping[str, Asset]) -> str:
    """The same-origin URL of docs asset ``name``, versioned by its content."""
    return versioned_url(ASSETS_PATH, name, assets)


def error_answer(view: View, error: ApiError) -> Response:
    """``error`` as the project's JSON error body."""
    return view.json(error.body(), status=error.status, headers=error.headers)


def _never_refused() -> ApiError | None:
    return None


@dataclass(frozen=True)
class InstalledPage:
    """A page drawn by browser files installed beside the worker: the files
    it serves, how they are found, its HTML, its headers, and its answers
    when the files are missing or the page is off."""

    #: Every name its assets' route answers; anything else is a 404 before
    #: the file system is looked at.
    served: Collection[str]
    installed: Callable[[], Mapping[str, Asset] | None]
    render: Callable[[Mapping[str, Asset]], str]
    missing: Callable[[], ApiError]
    headers: Mapping[str, str]
    #: The error answered instead of the page (what it shows is off), if any.
    refused: Callable[[], ApiError | None] = _never_refused

    def page(self, view: View) -> Response:
        """The HTML, with the page's headers; ``missing()`` as JSON if the
        files are not installed."""
        refused = self.refused()
        if refused is not None:
            return error_answer(view, refused)
        assets = self.installed()
        if assets is None:
            return error_answer(view, self.missing())
        return view.html(self.render(assets), headers=dict(self.headers))

    def asset(self, view: View, name: str) -> Response:
        """File ``name`` with its type, cacheable for a year; 404 for a name
        off the list, ``missing()`` if the files are not installed."""
        if name not in self.served:
            return error_answer(view, not_found(f"no such asset {name!r}"))
        assets = self.installed()
        if assets is None:
            return error_answer(view, self.missing())
        asset = assets[name]
        return view.bytes(
            asset.body,
            headers={
                "Content-Type": asset.content_type,
                "Cache-Control": IMMUTABLE,
                "X-Content-Type-Options": "nosniff",
            },
        )


class PageView(View):
    """The view of an `InstalledPage` (no key needed, answers while starting)."""

    files: ClassVar[InstalledPage]

    async def get(self, request: Request) -> Response:
        """The page, or the JSON error saying why not."""
        return self.files.page(self)


class PageAssetView(View):
    """The view of an `InstalledPage`'s files (no key needed)."""

    files: ClassVar[InstalledPage]

    async def get(self, request: Request, name: str) -> Response:
        """One file from the allow-list, or the JSON error saying why not."""
        return self.files.asset(self, name)


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


#: The docs page and its files.
DOCS = InstalledPage(
    served=SERVED,
    installed=installed_assets,
    render=docs_page,
    missing=not_installed,
    headers=PAGE_HEADERS,
)


@app.page(PAGE_PATH)
class DocsPage(PageView):
    """Swagger UI on this API's document (no key needed, answers while starting)."""

    files = DOCS


@app.page(ROUTES[1])
class DocsAsset(PageAssetView):
    """One file of the docs page, from the allow-list (no key needed)."""

    files = DOCS
