"""Signed email tracking: click-redirect and open-pixel URLs, and their checks.

A token is ``base64url(orjson payload) + "." + base64url(HMAC-SHA256)``, the
MAC taken over the first segment as sent. The payload carries the kind
("c" click, "o" open), the attempt key, the click target and the expiry (Unix
seconds). The click target lives inside the signed token and is never read
from the query string, and only http(s) targets are signed or accepted, so the
redirect endpoint cannot be used as an open redirect nor to run a
``javascript:`` URL. Tokens are not encrypted: anyone holding the email can
read the target and attempt key, which they can already see.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urlsplit

import orjson

from pipeline.errors import PermanentError

TrackingKind = Literal["click", "open", "unsubscribe"]

#: How long a tracking URL stays valid when the caller does not say.
DEFAULT_TTL = timedelta(days=90)
#: Shortest accepted secret: HMAC-SHA256 keys shorter than this are guessable.
MIN_SECRET_BYTES = 16
#: Longest token verify() reads; a URL longer than any email link is an attack.
MAX_TOKEN_CHARS = 8192
#: Attribute that keeps one link out of click tracking (reset links, unsubscribe).
NO_TRACK_ATTRIBUTE = "data-notrack"

_KIND_CODES: dict[TrackingKind, str] = {"click": "c", "open": "o", "unsubscribe": "u"}
_CODE_KINDS: dict[str, TrackingKind] = {"c": "click", "o": "open", "u": "unsubscribe"}
_PATHS: dict[TrackingKind, str] = {"click": "c", "open": "o", "unsubscribe": "u"}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# A start tag's attributes as the HTML tokenizer reads them: name, then an
# optional value, double-quoted, single-quoted or bare. HTML's whitespace is
# ASCII only (a no-break space belongs to a bare value), hence no \s.
_ATTRIBUTE = re.compile(
    r"""([^\t\n\f\r />"'=][^\t\n\f\r />"'=]*)"""
    r"""(?:[\t\n\f\r ]*=[\t\n\f\r ]*("[^"]*"|'[^']*'|[^\t\n\f\r >]+))?"""
)
_TAG_NAME = re.compile(r"<[A-Za-z][^\t\n\f\r />]*")
# Browsers drop these from anywhere in a URL before they parse it, and trim
# C0 controls and spaces from its ends.
_URL_NOISE = re.compile(r"[\t\n\r]")
_URL_TRIM = "".join(chr(code) for code in range(0x21))
_LINK_TAGS = frozenset({"a", "area"})


class InvalidTrackingToken(PermanentError):
    """A tracking token that is malformed, forged, tampered with or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExpiredTrackingToken(InvalidTrackingToken):
    """A genuine token past its expiry; ``claim`` is what it said.

    A click on an old email can still be redirected to its (signed) target,
    without counting as a click.
    """

    def __init__(self, claim: TrackingClaim) -> None:
        super().__init__(f"token expired at {claim.expires_at.isoformat()}")
        self.claim = claim


@dataclass(frozen=True, slots=True)
class TrackingClaim:
    """What a verified token says: which attempt, what happened, where to go."""

    kind: TrackingKind
    attempt_key: str
    url: str | None  # the click target; None for an open
    expires_at: datetime
    #: An unsubscribe's (tenant, user id, category); None for the others.
    scope: tuple[str, str, str] | None = None


def is_trackable_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host: all we redirect to."""
    # Controls could split a Location header; lone surrogates cannot be sent.
    if any(ord(char) <= 0x20 or 0x7F <= ord(char) <= 0x9F for char in url):
        return False
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        return False
    try:
        parts = urlsplit(url)
        # Reading the port validates it; a bad one raises ValueError.
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _system_now() -> datetime:
    return datetime.now(UTC)


class TrackingSigner:
    """Makes and checks the signed tracking URLs of one deployment.

    ``previous_secrets`` still verify (never sign), so the secret can be
    rotated without breaking the links in emails already sent.
    """

    def __init__(
        self,
        secret: bytes,
        base_url: str,
        clock: Callable[[], datetime] = _system_now,
        *,
        previous_secrets: Sequence[bytes] = (),
        default_ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        for key in (secret, *previous_secrets):
            if len(key) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"tracking secrets need at least {MIN_SECRET_BYTES} bytes"
                )
        if not is_trackable_url(base_url):
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        if default_ttl <= timedelta(0):
            raise ValueError("default_ttl must be positive")
        self._secret = secret
        self._keys = (secret, *previous_secrets)
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._default_ttl = default_ttl

    def click_url(
        self, attempt_key: str, target_url: str, expires_in: timedelta | None = None
    ) -> str:
        """``{base}/t/c/<token>``: records a click, then redirects to the target.

        Raises ``ValueError`` for a target that is not an http(s) URL.
        """
        if not is_trackable_url(target_url):
            raise ValueError(f"only http(s) URLs are tracked, not {target_url!r}")
        return self._url("click", attempt_key, target_url, expires_in)

    def open_pixel_url(
        self, attempt_key: str, expires_in: timedelta | None = None
    ) -> str:
        """``{base}/t/o/<token>``: the 1×1 image whose loading records an open."""
        return self._url("open", attempt_key, None, expires_in)

    def unsubscribe_url(
        self,
        attempt_key: str,
        scope: tuple[str, str, str],
        expires_in: timedelta | None = None,
    ) -> str:
        """``{base}/t/u/<token>``: a POST opts the user out of the category
        (RFC 8058 one-click); ``scope`` is (tenant, user id, category)."""
        if not all(scope):
            raise ValueError("an unsubscribe URL needs a tenant, a user and a category")
        return self._url("unsubscribe", attempt_key, None, expires_in, scope)

    def _url(
        self,
        kind: TrackingKind,
        attempt_key: str,
        target: str | None,
        expires_in: timedelta | None,
        scope: tuple[str, str, str] | None = None,
    ) -> str:
        if not attempt_key:
            raise ValueError("a tracking URL needs an attempt key")
        ttl = self._default_ttl if expires_in is None else expires_in
        if ttl <= timedelta(0):
            raise ValueError("expires_in must be positive")
        expires_at = int((self._now() + ttl).timestamp())
        payload: dict[str, str | int] = {
            "k": _KIND_CODES[kind],
            "a": attempt_key,
            "e": expires_at,
        }
        if target is not None:
            payload["u"] = target
        body = _b64encode(
            orjson.dumps(payload if scope is None else {**payload, "s": list(scope)})
        )
        return f"{self._base}/t/{_PATHS[kind]}/{body}.{self._mac(self._secret, body)}"

    @staticmethod
    def _mac(key: bytes, body: str) -> str:
        return _b64encode(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the tracking clock must return timezone-aware times")
        return now

    def verify(self, token: str, kind: TrackingKind | None = None) -> TrackingClaim:
        """The claim of a genuine, unexpired token, else ``InvalidTrackingToken``.

        ``kind`` is the kind the endpoint serves, so an open token cannot be
        replayed as a click. Raises ``ExpiredTrackingToken`` (a subclass) for a
        genuine token past its expiry.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidTrackingToken("token too long")
        body, dot, signature = token.partition(".")
        if not dot or not _SEGMENT.fullmatch(body) or not _SEGMENT.fullmatch(signature):
            raise InvalidTrackingToken("malformed token")
        # Compare the encoded MAC, not decoded bytes: base64 has several
        # spellings of the same bytes, and only the canonical one is genuine.
        if not any(
            hmac.compare_digest(self._mac(key, body), signature) for key in self._keys
        ):
            raise InvalidTrackingToken("bad signature")
        claim = _parse_claim(body)
        if kind is not None and claim.kind != kind:
            raise InvalidTrackingToken(f"a {claim.kind} token used for a {kind}")
        if self._now() >= claim.expires_at:
            raise ExpiredTrackingToken(claim)
        return claim

    def instrument_html(
        self, document: str, attempt_key: str, expires_in: timedelta | None = None
    ) -> str:
        """``document`` with its http(s) links tracked and an open pixel added.

        Every ``<a>``/``<area>`` whose ``href`` is an http(s) URL points at its
        click URL instead; other links (mailto:, tel:, #anchors, relative) and
        links marked ``data-notrack`` are left as they are. The pixel goes
        before the last ``</body>``, or at the end when there is none.
        """
        scanner = _LinkScanner(document)
        replacements: list[tuple[int, int, str]] = []
        for start, end, target in scanner.links:
            href = self.click_url(attempt_key, target, expires_in)
            replacements.append((start, end, f'"{html.escape(href, quote=True)}"'))
        pixel = (
            f'<img src="{html.escape(self.open_pixel_url(attempt_key, expires_in))}"'
            ' width="1" height="1" alt="" style="border:0;width:1px;height:1px;">'
        )
        at = len(document) if scanner.body_end is None else scanner.body_end
        replacements.append((at, at, pixel))
        pieces = []
        cursor = 0
        for start, end, text in sorted(replacements, key=lambda item: item[0]):
            pieces += [document[cursor:start], text]
            cursor = end
        pieces.append(document[cursor:])
        return "".join(pieces)


def _parse_claim(body: str) -> TrackingClaim:
    try:
        payload = orjson.loads(_b64decode(body))
    except (binascii.Error, ValueError) as error:
        raise InvalidTrackingToken("unreadable payload") from error
    if not isinstance(payload, dict):
        raise InvalidTrackingToken("unreadable payload")
    code = payload.get("k")
    kind = _CODE_KINDS.get(code) if isinstance(code, str) else None
    attempt_key = payload.get("a")
    expires = payload.get("e")
    target = payload.get("u")
    if kind is None or not isinstance(attempt_key, str) or not attempt_key:
        raise InvalidTrackingToken("payload lacks kind or attempt key")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise InvalidTrackingToken("payload lacks an expiry")
    if kind == "click":
        if not isinstance(target, str) or not is_trackable_url(target):
            raise InvalidTrackingToken("click target is not an http(s) URL")
    elif target is not None:
        raise InvalidTrackingToken(f"an {kind} token carries no target")
    scope = payload.get("s")
    if kind == "unsubscribe":
        if (
            not isinstance(scope, list)
            or len(scope) != 3
            or not all(isinstance(part, str) and part for part in scope)
        ):
            raise InvalidTrackingToken("an unsubscribe token names no user")
        scope = (scope[0], scope[1], scope[2])
    elif scope is not None:
        raise InvalidTrackingToken(f"a {kind} token names no user")
    try:
        expires_at = datetime.fromtimestamp(expires, UTC)
    except (OverflowError, OSError, ValueError) as error:
        raise InvalidTrackingToken("expiry out of range") from error
    return TrackingClaim(
        kind=kind,
        attempt_key=attempt_key,
        url=target,
        expires_at=expires_at,
        scope=scope,
    )


class _LinkScanner(HTMLParser):
    """Finds where tracked links' href values and the closing body tag are.

    The parser knows what is markup and what is not (comments, script and
    style contents); the edits are then made on the original text, so the rest
    of the document is kept byte for byte.
    """

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self._line_starts = [0]
        self._line_starts += [m.end() for m in re.finditer("\n", document)]
        self._document = document
        #: (start, end, target): the span of an href value and its URL.
        self.links: list[tuple[int, int, str]] = []
        self.body_end: int | None = None
        self.feed(document)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note the href of a link to track."""
        if tag not in _LINK_TAGS:
            return
        names = [name for name, _ in attrs]
        if NO_TRACK_ATTRIBUTE in names or "href" not in names:
            return
        raw = self.get_starttag_text() or ""
        start = self._offset()
        if self._document[start : start + len(raw)] != raw:
            return  # the parser's position disagrees with the text: leave it be
        span = _href_span(raw)
        if span is None:
            return
        value_start, value_end = span
        value = raw[value_start:value_end]
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        target = _URL_NOISE.sub("", html.unescape(value)).strip(_URL_TRIM)
        if is_trackable_url(target):
            self.links.append((start + value_start, start + value_end, target))

    def handle_endtag(self, tag: str) -> None:
        """Remember the last ``</body>``."""
        if tag == "body":
            self.body_end = self._offset()


def _href_span(tag_text: str) -> tuple[int, int] | None:
    """The span of the first href value in one start tag's text, quotes included."""
    name = _TAG_NAME.match(tag_text)
    if name is None:
        return None
    for match in _ATTRIBUTE.finditer(tag_text, name.end()):
        if match[1].lower() == "href":
            # Browsers use the first href and ignore the rest.
            return None if match[2] is None else match.span(2)
    return None
