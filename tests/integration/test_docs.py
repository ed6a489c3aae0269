"""GET /docs: Swagger UI from the worker itself, with no key, from the first moment."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.web.drivers.aiohttp import Web

from pipeline.api import docs
from pipeline.app import app
from pipeline.web import recovered
from tests.conftest import WorkerFactory
from tests.support import BrokerUnderTest, Topics, WorkerProcess, wait_for
from tests.unit.test_docs import referenced

#: Asset names that must not reach a file: off the list, or a way out of it.
REFUSED = [
    "package.json",
    "index.html",
    "swagger-initializer.js",
    "swagger-ui-bundle.js.map",
    "..%2Fpackage.json",
    "%2e%2e%2f%2e%2e%2fpackage-lock.json",
    "..%2F..%2F..%2F..%2Fpyproject.toml",
    "..%5C..%5Cpackage.json",
    "swagger-ui.css%00.png",
]
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, type, headers and raw body."""

    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes


def get(port: int, path: str) -> Answer:
    """GET ``path`` from loopback as is (no key, no normalisation of the path)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        headers = dict(response.getheaders())
        return Answer(
            response.status,
            headers.get("Content-Type", ""),
            headers,
            response.read(),
        )
    finally:
        connection.close()


# In process: the docs views on Faust's aiohttp driver, with no worker running,
# so its tables are not recovered, as while a worker starts.


@pytest.fixture
async def docs_client() -> AsyncIterator[TestClient]:
    """A client of a web server serving the docs views of the (not started) app."""
    web = Web(app)
    web.add_view(docs.DocsPage)
    web.add_view(docs.DocsAsset)
    async with TestClient(TestServer(web.web_app)) as client:
        yield client


async def test_the_docs_answer_while_the_worker_is_not_ready(
    docs_client: TestClient,
) -> None:
    """Where the API answers 503 not_ready, /docs and its files answer 200."""
    if docs.installed_assets() is None:
        pytest.fail("Swagger UI is not installed: run `make install`")
    assert not recovered(app)
    page = await docs_client.get("/docs")
    assert page.status == 200
    for url in referenced(await page.text()):
        assert (await docs_client.get(url)).status == 200, url


async def test_without_swagger_ui_installed_the_docs_answer_503_naming_the_fix(
    docs_client: TestClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No install: the project's JSON error saying how to install, not a 500;
    a name off the list is still a 404."""
    monkeypatch.setattr(docs, "ASSET_DIRS", (tmp_path / "absent",))
    for path in ("/docs", "/docs/assets/swagger-ui-bundle.js"):
        reply = await docs_client.get(path)
        assert reply.status == 503, path
        error = (await reply.json())["error"]
        assert error["code"] == "docs_not_installed"
        assert "make install" in error["message"]
    assert (await docs_client.get("/docs/assets/package.json")).status == 404


# A real worker process.


@pytest.fixture
def docs_worker(
    broker: BrokerUnderTest, topics: Topics, start_worker: WorkerFactory
) -> WorkerProcess:
    """A worker whose web server answers /docs; not waited on to be ready."""
    if docs.installed_assets() is None:
        pytest.fail("Swagger UI is not installed: run `make install`")
    topics.create(broker.url)
    worker = start_worker()

    def answered() -> bool:
        worker.assert_alive()
        try:
            return get(worker.web_port, "/docs").status == 200
        except OSError:
            return False  # the web server is not listening yet

    wait_for(answered, timeout=60, interval=0.05)
    return worker


@pytest.mark.integration
def test_a_worker_serves_the_docs_page_and_only_its_files(
    docs_worker: WorkerProcess,
) -> None:
    """/docs is HTML naming only same-origin files, each served with its type and
    a long cache life; names off the list and ways out of it are 404."""
    port = docs_worker.web_port
    page = get(port, "/docs")
    assert page.status == 200
    assert page.content_type.startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.body.decode()
    assert not re.search(r"https?://", html)
    urls = referenced(html)
    assert urls
    for url in urls:
        assert url.startswith("/docs/assets/") and "//" not in url, url
        asset = get(port, url)
        assert asset.status == 200, url
        suffix = Path(url.partition("?")[0]).suffix
        assert asset.content_type.startswith(TYPES[suffix]), (url, asset.content_type)
        assert "max-age=31536000" in asset.headers["Cache-Control"]
        name = url.removeprefix("/docs/assets/").partition("?")[0]
        if name in docs.PACKAGED:  # the pinned package's file, byte for byte
            assert asset.body == (docs.CHECKOUT_ASSETS / name).read_bytes(), name
    for name in REFUSED:
        assert get(port, f"/docs/assets/{name}").status == 404, name
    for path in ("/docs/assets/../../pyproject.toml", "/docs/../web/package.json"):
        assert get(port, path).status == 404, path


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.integration
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (e.g. `apt-get install chromium`); "
    "the page is not rendered in a browser",
)
def test_swagger_ui_renders_the_api_in_a_browser_that_reaches_no_other_host(
    docs_worker: WorkerProcess, tmp_path: Path
) -> None:
    """Headless chromium, unable to resolve any host but loopback, renders the
    document's title, its operations and the Authorize button."""
    assert CHROMIUM is not None
    port = docs_worker.web_port
    document = docs_worker.get("/openapi.json")
    assert document is not None, "GET /openapi.json did not answer JSON"
    title = document["info"]["title"]
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # chromium refuses to start sandboxed as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # Every other host fails to resolve: a file from a CDN would be missing.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=5000",
        "--dump-dom",
        f"http://127.0.0.1:{port}/docs",
    ]
    done = subprocess.run(argv, capture_output=True, timeout=90, check=False)
    dom = done.stdout.decode(errors="replace")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert re.search(rf'class="title">{re.escape(title)}<', dom), dom[-2000:]
    assert len(re.findall(r'class="opblock opblock-', dom)) >= 3
    assert 'class="btn authorize' in dom
