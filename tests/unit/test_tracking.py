"""Signed tracking links: round trip, tampering, expiry, targets, HTML rewriting."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.clock import FrozenClock
from pipeline.errors import PermanentError
from pipeline.rendering import TemplateStore
from pipeline.tracking import (
    ExpiredTrackingToken,
    InvalidTrackingToken,
    TrackingSigner,
    is_trackable_url,
)

SECRET = b"tracking-secret-for-tests-0123456789"
BASE = "https://t.example.com"
START = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
KEY = "n-1:email:alice@example.com"


def signer_at(clock: FrozenClock, secret: bytes = SECRET) -> TrackingSigner:
    """A signer on ``clock``."""
    return TrackingSigner(secret, BASE + "/", clock.now)


def token_of(url: str, kind: str) -> str:
    """The token of a tracking URL, checking the URL's shape on the way."""
    prefix = f"{BASE}/t/{kind}/"
    assert url.startswith(prefix), url
    return url.removeprefix(prefix)


def b64(raw: bytes) -> str:
    """base64url without padding, as tokens spell it."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(payload: dict[str, Any], secret: bytes = SECRET) -> str:
    """A token built by hand from the documented format, signed with ``secret``."""
    body = b64(orjson.dumps(payload))
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{b64(mac)}"


# -- round trip ------------------------------------------------------------------


def test_click_round_trip() -> None:
    """A click URL verifies to its attempt, target and expiry."""
    clock = FrozenClock(START)
    signer = signer_at(clock)
    url = signer.click_url(KEY, "https://shop.example.com/a?b=1&c=2", timedelta(days=7))
    claim = signer.verify(token_of(url, "c"), "click")
    assert claim.kind == "click"
    assert claim.attempt_key == KEY
    assert claim.url == "https://shop.example.com/a?b=1&c=2"
    assert claim.expires_at == START + timedelta(days=7)


def test_open_round_trip() -> None:
    """An open-pixel URL verifies to its attempt, with no target."""
    clock = FrozenClock(START)
    signer = signer_at(clock)
    claim = signer.verify(token_of(signer.open_pixel_url(KEY), "o"), "open")
    assert (claim.kind, claim.attempt_key, claim.url) == ("open", KEY, None)
    assert claim.expires_at > START


# Any printable character: a URL in an email may carry non-ASCII text.
URL_CHARACTERS = st.characters(
    min_codepoint=0x21, exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")
)
TARGETS = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}/{path}?{query}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z0-9]{1,12}(\.[a-z]{2,6}){1,2}", fullmatch=True),
    st.text(alphabet=URL_CHARACTERS.filter(lambda char: char not in "?#"), max_size=30),
    st.text(alphabet=URL_CHARACTERS, max_size=30),
)


@given(st.text(min_size=1, max_size=60), TARGETS)
def test_round_trip_any_key_and_target(attempt_key: str, target: str) -> None:
    """Whatever the attempt key and http(s) target, they come back unchanged."""
    signer = signer_at(FrozenClock(START))
    claim = signer.verify(token_of(signer.click_url(attempt_key, target), "c"))
    assert (claim.attempt_key, claim.url) == (attempt_key, target)


# -- forgery and tampering -------------------------------------------------------


@given(st.data())
def test_any_changed_character_is_refused(data: st.DataObject) -> None:
    """Changing any one character of a token makes it invalid."""
    signer = signer_at(FrozenClock(START))
    token = token_of(signer.click_url(KEY, "https://shop.example.com/x"), "c")
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(
        st.sampled_from(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
        )
    )
    tampered = token[:index] + replacement + token[index + 1 :]
    if tampered != token:
        with pytest.raises(InvalidTrackingToken):
            signer.verify(tampered)


def test_a_payload_swapped_between_tokens_is_refused() -> None:
    """One token's signature does not cover another's payload."""
    signer = signer_at(FrozenClock(START))
    good = token_of(signer.click_url(KEY, "https://shop.example.com/x"), "c")
    other = token_of(signer.click_url(KEY, "https://evil.example.com/x"), "c")
    mixed = other.split(".")[0] + "." + good.split(".")[1]
    with pytest.raises(InvalidTrackingToken, match="bad signature"):
        signer.verify(mixed)


def test_another_secret_is_refused_until_rotated_in() -> None:
    """A token signed with another secret fails; a previous secret still verifies."""
    clock = FrozenClock(START)
    old = signer_at(clock, b"the-previous-secret-0123456789")
    token = token_of(old.click_url(KEY, "https://shop.example.com/x"), "c")
    with pytest.raises(InvalidTrackingToken, match="bad signature"):
        signer_at(clock).verify(token)
    rotated = TrackingSigner(
        SECRET, BASE, clock.now, previous_secrets=[b"the-previous-secret-0123456789"]
    )
    assert rotated.verify(token).url == "https://shop.example.com/x"
    # New tokens are signed with the current secret only.
    fresh = token_of(rotated.click_url(KEY, "https://shop.example.com/y"), "c")
    with pytest.raises(InvalidTrackingToken):
        old.verify(fresh)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dot",
        "a.b.c",
        ".sig",
        "body.",
        "ey J.abc",
        "eyJ!.abc",
        "A" * 9000 + ".x",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    """Garbage is an InvalidTrackingToken, a permanent error, never a crash."""
    with pytest.raises(InvalidTrackingToken) as caught:
        signer_at(FrozenClock(START)).verify(token)
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize(
    "payload",
    [
        ["a list"],
        {"k": "x", "a": KEY, "e": 1_900_000_000},
        {"k": "c", "a": "", "e": 1_900_000_000, "u": "https://x.example"},
        {"k": "c", "a": KEY, "u": "https://x.example"},
        {"k": "c", "a": KEY, "e": True, "u": "https://x.example"},
        {"k": "c", "a": KEY, "e": 10**18, "u": "https://x.example"},
        {"k": "o", "a": KEY, "e": 1_900_000_000, "u": "https://x.example"},
    ],
)
def test_signed_but_senseless_payloads_are_refused(payload: Any) -> None:
    """Even with a good signature, a payload must say something valid."""
    with pytest.raises(InvalidTrackingToken):
        signer_at(FrozenClock(START)).verify(forge(payload))


def test_the_documented_format_verifies() -> None:
    """A token built from the documented format is accepted: the format is real."""
    expires = int((START + timedelta(hours=1)).timestamp())
    payload = {"k": "c", "a": KEY, "e": expires, "u": "https://x.example/p"}
    claim = signer_at(FrozenClock(START)).verify(forge(payload))
    assert claim.url == "https://x.example/p"


# -- expiry ------------------------------------------------------------------------


def test_expiry_follows_the_injected_clock() -> None:
    """Valid up to its expiry, then refused, with the claim still readable."""
    clock = FrozenClock(START)
    signer = signer_at(clock)
    token = token_of(
        signer.click_url(KEY, "https://x.example/p", timedelta(hours=2)), "c"
    )
    clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert signer.verify(token).url == "https://x.example/p"
    clock.advance(timedelta(seconds=1))
    with pytest.raises(ExpiredTrackingToken) as caught:
        signer.verify(token)
    assert isinstance(caught.value, InvalidTrackingToken)
    assert caught.value.claim.url == "https://x.example/p"
    assert caught.value.claim.expires_at == START + timedelta(hours=2)


def test_open_token_is_not_a_click() -> None:
    """A token is only good at the endpoint of its own kind."""
    signer = signer_at(FrozenClock(START))
    token = token_of(signer.open_pixel_url(KEY), "o")
    with pytest.raises(InvalidTrackingToken, match="open token used for a click"):
        signer.verify(token, "click")


# -- targets -------------------------------------------------------------------------

NOT_HTTP = [
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "//evil.example.com/x",
    "/relative/path",
    "https:evil.example.com",
    "https:\\\\evil.example.com",
    "https://",
    "https://x.example/a\r\nLocation: https://evil.example.com",
    "http://[::1",
    "mailto:alice@example.com",
    "ftp://files.example.com/x",
]


@pytest.mark.parametrize("target", NOT_HTTP)
def test_non_http_targets_are_never_signed(target: str) -> None:
    """click_url refuses anything the redirect could abuse."""
    assert not is_trackable_url(target)
    assert not is_trackable_url("https://x.example/\ud800")
    with pytest.raises(ValueError, match="only http"):
        signer_at(FrozenClock(START)).click_url(KEY, target)


@pytest.mark.parametrize("target", NOT_HTTP)
def test_non_http_targets_are_refused_even_when_signed(target: str) -> None:
    """A signed token carrying a javascript:/data: target still does not verify."""
    expires = int((START + timedelta(hours=1)).timestamp())
    token = forge({"k": "c", "a": KEY, "e": expires, "u": target})
    with pytest.raises(InvalidTrackingToken, match="not an http"):
        signer_at(FrozenClock(START)).verify(token)


def test_signer_refuses_weak_settings() -> None:
    """A short secret, a non-http base URL or a naive clock is refused."""
    with pytest.raises(ValueError, match="bytes"):
        TrackingSigner(b"short", BASE)
    with pytest.raises(ValueError, match="base_url"):
        TrackingSigner(SECRET, "javascript:alert(1)")
    naive = TrackingSigner(SECRET, BASE, lambda: datetime(2026, 6, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.open_pixel_url(KEY)


# -- instrument_html -------------------------------------------------------------


class Links(HTMLParser):
    """The hrefs and image sources of a document, as a browser would read them."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.hrefs: list[str | None] = []
        self.images: list[str | None] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect a link's href or an image's src."""
        if tag in ("a", "area"):
            self.hrefs.append(dict(attrs).get("href"))
        elif tag == "img":
            self.images.append(dict(attrs).get("src"))


def clicks_of(signer: TrackingSigner, document: str) -> list[str | None]:
    """Each link's destination: the verified target of tracked ones, else the href."""
    destinations: list[str | None] = []
    for href in Links(document).hrefs:
        if href and href.startswith(f"{BASE}/t/c/"):
            claim = signer.verify(token_of(href, "c"), "click")
            assert claim.attempt_key == KEY
            destinations.append(claim.url)
        else:
            destinations.append(href)
    return destinations


def opens_of(signer: TrackingSigner, document: str) -> list[str]:
    """The attempt keys of the open pixels in a document."""
    return [
        signer.verify(token_of(src, "o"), "open").attempt_key
        for src in Links(document).images
        if src and src.startswith(f"{BASE}/t/o/")
    ]


def test_links_are_tracked_whatever_the_attribute_order_and_quoting() -> None:
    """Double, single and no quotes; href first or last; any case."""
    signer = signer_at(FrozenClock(START))
    document = (
        "<html><body>\n"
        '<a href="https://a.example/1?x=1&amp;y=2" class="btn">one</a>\n'
        "<a class='btn' title=\"go\" href='http://b.example/2'>two</a>\n"
        "<a href=https://c.example/3 target=_blank>three</a>\n"
        '<A TITLE="x" HREF="https://d.example/4">four</A>\n'
        '<a\n  style="color: red"\n  href = "https://e.example/5"\n>five</a>\n'
        '<area shape="rect" href="https://f.example/6">\n'
        # HTML whitespace is ASCII: a no-break space stays in a bare value.
        "<a href=https://g.example/7\xa0b>seven</a>\n"
        "</body></html>"
    )
    out = signer.instrument_html(document, KEY)
    assert clicks_of(signer, out) == [
        "https://a.example/1?x=1&y=2",
        "http://b.example/2",
        "https://c.example/3",
        "https://d.example/4",
        "https://e.example/5",
        "https://f.example/6",
        "https://g.example/7\xa0b",
    ]
    for kept in ('class="btn"', 'title="go"', "target=_blank", 'style="color: red"'):
        assert kept in out


def test_non_http_links_and_opted_out_links_are_left_alone() -> None:
    """mailto:, tel:, anchors, relative and javascript: links stay as written."""
    signer = signer_at(FrozenClock(START))
    links = [
        '<a href="mailto:help@example.com">mail</a>',
        "<a href='tel:+14155550100'>call</a>",
        '<a href="#section-2">jump</a>',
        '<a href="/account">account</a>',
        '<a href="javascript:alert(1)">bad</a>',
        "<a name=top>anchor without href</a>",
        '<a data-notrack href="https://app.example.com/reset?token=secret">reset</a>',
    ]
    document = "<body>" + "".join(links) + "</body>"
    out = signer.instrument_html(document, KEY)
    for link in links:
        assert link in out
    assert "/t/c/" not in out


def test_markup_that_is_not_a_link_is_not_rewritten() -> None:
    """Links inside comments and scripts, and href text in other attributes, stay."""
    signer = signer_at(FrozenClock(START))
    document = (
        '<body><!-- <a href="https://old.example">old</a> -->'
        "<script>var a = '<a href=\"https://s.example\">';</script>"
        '<a title=\'href="https://fake.example"\' href="https://real.example">x</a>'
        "</body>"
    )
    out = signer.instrument_html(document, KEY)
    assert '<!-- <a href="https://old.example">old</a> -->' in out
    assert "<script>var a = '<a href=\"https://s.example\">';</script>" in out
    assert "title='href=\"https://fake.example\"'" in out
    assert clicks_of(signer, out) == ["https://real.example"]


def test_open_pixel_goes_before_the_closing_body() -> None:
    """One pixel, just before the last </body>, or at the end without one."""
    signer = signer_at(FrozenClock(START))
    with_body = signer.instrument_html("<html><BODY><p>hi</p></BODY>\n</html>", KEY)
    assert with_body.endswith('style="border:0;width:1px;height:1px;"></BODY>\n</html>')
    assert opens_of(signer, with_body) == [KEY]
    fragment = signer.instrument_html("<p>hi</p>", KEY)
    assert fragment.startswith("<p>hi</p><img ")
    assert opens_of(signer, fragment) == [KEY]


HREF_QUOTES = st.sampled_from(['"{}"', "'{}'", "{}"])
OTHER_HREFS = st.sampled_from(
    ["mailto:a@example.com", "tel:+15550100", "#top", "/relative", "javascript:void(0)"]
)


@given(
    st.lists(
        st.tuples(
            st.one_of(
                TARGETS.filter(lambda url: not set("'\"<>& ") & set(url)), OTHER_HREFS
            ),
            HREF_QUOTES,
            st.booleans(),
        ),
        max_size=6,
    )
)
def test_instrumented_links_lead_where_they_led(
    links: list[tuple[str, str, bool]],
) -> None:
    """Every link still leads to its own destination; only http(s) ones via us."""
    signer = signer_at(FrozenClock(START))
    parts = []
    for href, quoting, href_first in links:
        attribute = "href=" + quoting.format(href)
        attributes = (
            [attribute, 'class="x"'] if href_first else ['class="x"', attribute]
        )
        parts.append(f"<a {' '.join(attributes)}>link</a>")
    document = "<html><body>" + "\n".join(parts) + "</body></html>"
    out = signer.instrument_html(document, KEY)
    assert clicks_of(signer, out) == [href for href, _, _ in links]
    tracked = [href for href, _, _ in links if is_trackable_url(href)]
    assert out.count(f"{BASE}/t/c/") == len(tracked)
    assert opens_of(signer, out) == [KEY]


def test_a_rendered_email_is_instrumented() -> None:
    """The shipped order email: tracking link tracked; reset links never are."""
    signer = signer_at(FrozenClock(START))
    store = TemplateStore.load()
    order = store.render(
        "order_shipped",
        "email",
        None,
        "u",
        {"order_id": "A1", "tracking_url": "https://track.example.com/1Z?a=1&b=2"},
    )
    assert order.html is not None
    out = signer.instrument_html(order.html, KEY)
    assert clicks_of(signer, out) == ["https://track.example.com/1Z?a=1&b=2"]
    assert out.count("/t/c/") == 1 and opens_of(signer, out) == [KEY]
    reset = store.render(
        "password_reset", "email", None, "u", {"reset_url": "https://a.example/r?t=s"}
    )
    assert reset.html is not None
    out = signer.instrument_html(reset.html, KEY)
    assert clicks_of(signer, out) == ["https://a.example/r?t=s"]
    assert "/t/c/" not in out and opens_of(signer, out) == [KEY]


def test_an_unsubscribe_token_names_its_user_and_only_unsubscribes() -> None:
    """The signed scope comes back; a click or open token is no unsubscribe
    and an unsubscribe token is no click; a scope cannot be changed."""
    signer = signer_at(FrozenClock(START))
    url = signer.unsubscribe_url("n_1:email:a@b.co", ("acme", "u_1", "marketing"))
    token = token_of(url, "u")
    claim = signer.verify(token, "unsubscribe")
    assert claim.scope == ("acme", "u_1", "marketing") and claim.url is None
    with pytest.raises(InvalidTrackingToken):
        signer.verify(token, "click")
    opened = token_of(signer.open_pixel_url("n_1:email:a@b.co"), "o")
    with pytest.raises(InvalidTrackingToken):
        signer.verify(opened, "unsubscribe")
    with pytest.raises(ValueError, match="needs a tenant"):
        signer.unsubscribe_url("n_1:email:a@b.co", ("acme", "", "marketing"))
