"""The /docs page: same-origin assets from an allow-list, pinned Swagger UI 5."""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

from pipeline.api import docs
from pipeline.app import DISCOVER, app

REPO = Path(__file__).resolve().parents[2]


class References(HTMLParser):
    """Every URL an HTML page refers to (``src`` and ``href`` attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def referenced(html: str) -> list[str]:
    """The URLs ``html`` loads or links to, in order."""
    parser = References()
    parser.feed(html)
    return parser.urls


def fake_install(directory: Path, marker: str = "") -> Path:
    """A directory holding every packaged file, each with distinct content."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in docs.PACKAGED:
        (directory / name).write_text(f"{name} {marker}")
    return directory


def test_the_worker_serves_the_docs_views() -> None:
    """The module is among those the app discovers, and its views are mounted."""
    assert docs.__name__ in DISCOVER
    assert {path: type(app.web.views[path]) for path in docs.ROUTES} == {
        docs.PAGE_PATH: docs.DocsPage,
        docs.ROUTES[1]: docs.DocsAsset,
    }


def test_the_page_loads_every_allow_listed_asset_from_this_origin_only(
    tmp_path: Path,
) -> None:
    """Each URL of the page is a /docs/assets/ path on the list, versioned by its
    content; every listed file is used; no URL names a scheme or another host."""
    assets = docs.installed_assets([fake_install(tmp_path)])
    assert assets is not None
    html = docs.docs_page(assets)
    urls = referenced(html)
    assert "://" not in html
    names = []
    for url in urls:
        assert url.startswith(docs.ASSETS_PATH), url
        name, _, version = url.removeprefix(docs.ASSETS_PATH).partition("?v=")
        assert version == assets[name].digest
        names.append(name)
    assert sorted(names) == sorted(docs.SERVED)


def test_the_initializer_reads_this_origins_document_and_keeps_the_key() -> None:
    """Swagger UI starts on /openapi.json (no host), keeps the Authorize key, and
    fetches no validator badge from elsewhere."""
    source = docs.INITIALIZER_SOURCE
    assert 'url: "/openapi.json"' in source
    assert "persistAuthorization: true" in source
    assert "validatorUrl: null" in source
    assert "://" not in source


def test_assets_come_from_the_first_directory_holding_all_of_them(
    tmp_path: Path,
) -> None:
    """A partial install is passed over, none at all is None, and a re-install
    is read anew (a new digest, so a new URL for browsers' caches)."""
    partial = fake_install(tmp_path / "partial")
    (partial / "swagger-ui-bundle.js").unlink()
    whole = fake_install(tmp_path / "whole", "v1")
    assert docs.installed_assets([partial, tmp_path / "missing"]) is None

    first = docs.installed_assets([partial, whole])
    assert first is not None
    assert first["swagger-ui.css"].body == b"swagger-ui.css v1"
    assert first["swagger-ui.css"].content_type.startswith("text/css")
    assert first[docs.INITIALIZER].body == docs.INITIALIZER_SOURCE.encode()

    (whole / "swagger-ui.css").write_text("swagger-ui.css v2, longer")
    second = docs.installed_assets([partial, whole])
    assert second is not None
    assert second["swagger-ui.css"].body == b"swagger-ui.css v2, longer"
    assert second["swagger-ui.css"].digest != first["swagger-ui.css"].digest


def test_the_not_installed_error_says_how_to_install() -> None:
    """503 with a stable code and the command that fixes it."""
    error = docs.not_installed()
    assert error.status == 503
    assert error.body()["error"]["code"] == "docs_not_installed"
    assert "make install" in error.message


def test_swagger_ui_5_is_pinned_exactly_with_integrity_hashes() -> None:
    """web/package.json pins one exact 5.x; the lock agrees, hashes every package
    and names no registry (npm ci fetches from the one npm is configured with)."""
    manifest = json.loads((REPO / "web/package.json").read_text())
    lock = json.loads((REPO / "web/package-lock.json").read_text())
    pinned = manifest["dependencies"]["swagger-ui-dist"]
    assert re.fullmatch(r"5\.\d+\.\d+", pinned), pinned
    packages = {k: v for k, v in lock["packages"].items() if k}
    assert packages["node_modules/swagger-ui-dist"]["version"] == pinned
    for name, package in packages.items():
        assert package["integrity"].startswith("sha512-"), name
        assert "resolved" not in package, name


def test_the_docker_image_copies_every_packaged_file() -> None:
    """The image serves /docs: its build stage copies each file the page loads."""
    dockerfile = (REPO / "Dockerfile").read_text()
    for name in docs.PACKAGED:
        assert name in dockerfile, name
    assert str(docs.PREFIX_ASSETS.relative_to(sys.prefix)) in dockerfile
