"""Templates: loading checks, locale fallback, A/B variants, escaping, sandbox."""

from __future__ import annotations

import tomllib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PermanentError
from pipeline.policy import DEFAULT_CATALOGUE_PATH
from pipeline.rendering import (
    CHANNEL_PARTS,
    RenderError,
    TemplateFile,
    TemplateFileError,
    TemplateStore,
    choose_variant,
    locale_chain,
)

STORE = TemplateStore.load()
CATALOGUE = tomllib.loads(DEFAULT_CATALOGUE_PATH.read_text())["types"]
USER = {"name": "Alice", "locale": "en"}
NOTIFICATION = {
    "id": "n-1",
    "type": "order_shipped",
    "created_at": datetime(2026, 6, 10, 12, 0, tzinfo=UTC),
}

# Per type: every variable the templates know, and only the required ones.
FULL_DATA: dict[str, dict[str, Any]] = {
    "default": {
        "title": "Your report is ready",
        "message": "The June report is ready to download.",
        "url": "https://app.example.com/reports/june",
        "app_name": "Example",
    },
    "order_shipped": {
        "order_id": "ORD-4821",
        "carrier": "UPS",
        "tracking_number": "1Z999AA10123456784",
        "tracking_url": "https://track.example.com/1Z999AA10123456784",
        "estimated_delivery": "2026-06-12",
        "items": [{"name": "Tea pot", "quantity": 2}, {"name": "Cups"}],
        "app_name": "Example Shop",
    },
    "password_reset": {
        "reset_url": "https://app.example.com/reset?token=abc",
        "code": "482913",
        "expires_in_minutes": 15,
        "requested_from": "Lyon, France",
        "app_name": "Example",
    },
    "password_changed": {
        "changed_at": "2026-06-10 12:00 UTC",
        "device": "Firefox on Linux",
        "location": "Lyon, France",
        "secure_account_url": "https://app.example.com/security",
        "support_email": "help@example.com",
        "app_name": "Example",
    },
    "comment_reply": {
        "author": "Bob",
        "excerpt": "Great point, I had not thought of that.",
        "post_title": "Kafka lanes",
        "url": "https://app.example.com/posts/1#c2",
    },
    "post_liked": {"liker": "Ann", "post_title": "Sunset"},
    "post_liked.digest": {
        "count": 5,
        "first": {"liker": "Ann"},
        "items": [{"liker": "Ann"}, {"liker": "Bo"}, {"liker": "Cy"}],
    },
    "campaign": {
        "headline": "Summer sale",
        "message": "Everything is 30% off until Sunday.",
        "cta_url": "https://shop.example.com/sale",
        "cta_label": "Shop the sale",
        "image_url": "https://cdn.example.com/sale.png",
        "unsubscribe_url": "https://app.example.com/unsubscribe?u=1",
        "app_name": "Example Shop",
    },
}
MINIMAL_DATA: dict[str, dict[str, Any]] = {
    "default": {},
    "order_shipped": {"order_id": "ORD-4821"},
    "password_reset": {"reset_url": "https://app.example.com/reset?token=abc"},
    "password_changed": {},
    "comment_reply": {"author": "Bob"},
    "post_liked": {"liker": "Ann"},
    "post_liked.digest": {
        "count": 1,
        "first": {"liker": "Ann"},
        "items": [{"liker": "Ann"}],
    },
    "campaign": {"headline": "Summer sale", "message": "30% off until Sunday."},
}
# A value of each type's data that the reader must see in every message.
MUST_SHOW = {
    "order_shipped": "ORD-4821",
    "comment_reply": "Bob",
    "post_liked": "Ann",
    "post_liked.digest": "Ann",
}
# The GSM 03.38 default alphabet (and its extension table): an SMS in these
# characters costs 160 per segment, any other character drops it to 70.
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "^{}\\[~]|€"
)


def write(directory: Path, name: str, text: str) -> None:
    """Write one template file under ``directory``."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def push_file(
    body: str, *, title: str = "T", version: int = 1, extra: str = "", data: str = "{}"
) -> str:
    """A push template file's text; ``data`` is its declaration, a TOML table."""
    return (
        f"version = {version}\ndata = {data}\n{extra}"
        f"title = '''{title}'''\nbody = '''{body}'''\n"
    )


def store_of(tmp_path: Path, files: dict[str, str]) -> TemplateStore:
    """A store loaded from ``files`` (relative name → text) plus a default push."""
    files.setdefault("default/push.default.toml", push_file("generic"))
    for name, text in files.items():
        write(tmp_path, name, text)
    return TemplateStore.load(tmp_path)


# -- the shipped templates -----------------------------------------------------


def shipped(file: TemplateFile) -> str:
    """A readable test id."""
    return file.name


@pytest.mark.parametrize("file", STORE.files(), ids=shipped)
@pytest.mark.parametrize("samples", [FULL_DATA, MINIMAL_DATA], ids=["full", "minimal"])
def test_every_shipped_template_renders(
    file: TemplateFile, samples: dict[str, dict[str, Any]]
) -> None:
    """Each file renders its type's data, full or minimal, into every part."""
    content = STORE.render(
        file.type,
        file.channel,
        file.locale,
        "user-1",
        samples[file.type],
        USER,
        NOTIFICATION,
        variant=file.variant or None,
    )
    assert content.template == f"{file.type}/{file.channel}"
    assert (content.locale, content.variant) == (file.locale, file.variant)
    assert content.version == file.version >= 1
    shown = [content.body, content.title, content.subject, content.text, content.html]
    parts = {"title": content.title, "subject": content.subject, "html": content.html}
    for part in CHANNEL_PARTS[file.channel]:
        if part in parts:
            assert parts[part]
    assert content.body
    assert not any(text and "None" in text for text in shown)
    if file.type in MUST_SHOW:
        assert any(MUST_SHOW[file.type] in (text or "") for text in shown)
    if file.channel == "sms":
        assert set(content.body) <= GSM7, set(content.body) - GSM7


@pytest.mark.parametrize("type_name", sorted(CATALOGUE))
def test_every_catalogue_type_has_its_channels(type_name: str) -> None:
    """Each type in the catalogue has its own template on each of its channels."""
    for channel in CATALOGUE[type_name]["channels"]:
        content = STORE.render(
            type_name, channel, None, "user-1", FULL_DATA[type_name], USER
        )
        assert content.template == f"{type_name}/{channel}"
        assert content.locale == "default"


def test_full_data_shows_up_in_the_email() -> None:
    """The optional data a caller gives is what the user reads."""
    content = STORE.render(
        "order_shipped", "email", "en-GB", "u", FULL_DATA["order_shipped"], USER
    )
    assert content.subject == "Your order ORD-4821 is on its way"
    assert content.text is not None and content.html is not None
    for shown in ("Hi Alice", "UPS", "1Z999AA10123456784", "Tea pot x 2", "2026-06-12"):
        assert shown in content.text
    assert 'href="https://track.example.com/1Z999AA10123456784"' in content.html
    assert content.body == content.text


def test_missing_required_data_names_the_template_and_variable() -> None:
    """Data a template needs and the request lacks is a permanent RenderError."""
    with pytest.raises(RenderError) as caught:
        STORE.render("order_shipped", "push", "fr", "u", {"carrier": "UPS"}, USER)
    assert isinstance(caught.value, PermanentError)
    assert "order_shipped/push.fr.toml" in caught.value.reason
    assert "'order_id' is undefined" in caught.value.reason
    assert caught.value.template == "order_shipped/push.fr.toml"


def test_a_json_null_prints_as_nothing() -> None:
    """Optional data sent as null is treated as absent, never shown as None."""
    content = STORE.render(
        "order_shipped", "push", None, "u", {"order_id": "A1", "carrier": None}, USER
    )
    assert content.body == "It is on its way. Tap to track it."


def test_one_line_parts_cannot_carry_a_newline() -> None:
    """A subject made from data stays one line: no header injection."""
    data = {**MINIMAL_DATA["campaign"], "headline": "Sale\r\nBcc: all@example.com"}
    content = STORE.render("campaign", "email", None, "u", data, USER)
    assert content.subject == "Sale Bcc: all@example.com"


# -- locale fallback -------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "chain"),
    [
        ("fr-CA", ["fr-CA", "fr", "default"]),
        ("fr_ca", ["fr-CA", "fr", "default"]),
        ("pt_BR", ["pt-BR", "pt", "default"]),
        ("pt_BR.UTF-8", ["pt-BR", "pt", "default"]),
        ("de_DE@euro", ["de-DE", "de", "default"]),
        ("EN", ["en", "default"]),
        ("zh-hant-tw", ["zh-Hant-TW", "zh-Hant", "zh", "default"]),
        ("es-419", ["es-419", "es", "default"]),
        (None, ["default"]),
        ("", ["default"]),
        ("default", ["default"]),
        ("C", ["default"]),
        ("../../etc/passwd", ["default"]),
        ("fr-CA-../x", ["fr-CA", "fr", "default"]),
    ],
)
def test_locale_chain(locale: str | None, chain: list[str]) -> None:
    """Locales are normalised and fall back from most to least specific."""
    assert locale_chain(locale) == chain


@given(st.text(max_size=24))
def test_locale_chain_shape(locale: str) -> None:
    """Any input: ends in default, each step drops one subtag, normalised."""
    chain = locale_chain(locale)
    assert chain[-1] == "default"
    assert len(set(chain)) == len(chain)
    for longer, shorter in zip(chain[:-2], chain[1:-1], strict=True):
        assert longer.startswith(shorter + "-")
    assert locale_chain(chain[0]) == chain


@pytest.mark.parametrize(
    ("type_name", "channel", "locale", "template", "used"),
    [
        ("password_reset", "email", "fr-CA", "password_reset/email", "fr-CA"),
        ("password_reset", "email", "fr_FR", "password_reset/email", "fr"),
        ("password_reset", "sms", "fr-CA", "password_reset/sms", "fr"),
        ("password_reset", "sms", "de-DE", "password_reset/sms", "default"),
        ("order_shipped", "push", "fr-CA", "order_shipped/push", "fr"),
        ("comment_reply", "push", "fr-CA", "comment_reply/push", "default"),
        ("order_shipped", "in_app", "fr", "default/in_app", "default"),
        ("no_such_type", "sms", None, "default/sms", "default"),
    ],
)
def test_shipped_fallback(
    type_name: str, channel: str, locale: str, template: str, used: str
) -> None:
    """The packaged files fall back fr-CA → fr → default, then to the default type."""
    data = {**FULL_DATA["default"], **FULL_DATA.get(type_name, {})}
    content = STORE.render(type_name, channel, locale, "u", data, USER)
    assert (content.template, content.locale) == (template, used)


def test_fallback_chain_picks_the_most_specific_file(tmp_path: Path) -> None:
    """fr-CA, then fr, then default, then the default type's template."""
    store = store_of(
        tmp_path,
        {
            "greet/push.default.toml": push_file("Hello"),
            "greet/push.fr.toml": push_file("Bonjour", version=2),
            "greet/push.fr-CA.toml": push_file("Allô", version=3),
        },
    )

    def body(type_name: str, channel: str, locale: str | None) -> tuple[str, str]:
        content = store.render(type_name, channel, locale, "u", {})
        return content.body, content.locale

    assert body("greet", "push", "fr-CA") == ("Allô", "fr-CA")
    assert body("greet", "push", "fr-BE") == ("Bonjour", "fr")
    assert body("greet", "push", "fr") == ("Bonjour", "fr")
    assert body("greet", "push", "en-US") == ("Hello", "default")
    assert body("greet", "push", None) == ("Hello", "default")
    assert body("other", "push", "fr-CA") == ("generic", "default")
    assert store.render("greet", "push", "fr-CA", "u", {}).version == 3
    with pytest.raises(RenderError, match="no template for 'greet'.*sms"):
        store.render("greet", "sms", "fr", "u", {})
    with pytest.raises(RenderError, match="unknown channel"):
        store.render("greet", "fax", "fr", "u", {})


# -- A/B variants --------------------------------------------------------------


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,3}", fullmatch=True),
        st.integers(min_value=1, max_value=9),
        min_size=1,
        max_size=4,
    ),
    st.text(max_size=20),
    st.text(max_size=12),
)
def test_variant_is_deterministic(
    weights: dict[str, int], user_key: str, type_name: str
) -> None:
    """The same (user, type) always gets the same variant, whatever the order."""
    chosen = choose_variant(weights, user_key, type_name)
    assert chosen in weights
    assert choose_variant(list(reversed(weights.items())), user_key, type_name) == (
        chosen
    )


@settings(max_examples=25)
@given(
    st.lists(st.integers(min_value=1, max_value=10), min_size=2, max_size=4),
    st.text(min_size=1, max_size=12),
)
def test_variants_follow_their_weights(weights: list[int], type_name: str) -> None:
    """Over many users each variant's share is close to its weight's share."""
    variants = {f"v{index}": weight for index, weight in enumerate(weights)}
    users = 6000
    counts = Counter(
        choose_variant(variants, f"user-{number}", type_name) for number in range(users)
    )
    total = sum(weights)
    for name, weight in variants.items():
        # ±0.035 is over five standard deviations at 6,000 users.
        assert abs(counts[name] / users - weight / total) < 0.035, counts


def test_variant_weights_must_make_sense() -> None:
    """No variants, or only zero weights, is a caller bug, not a silent choice."""
    with pytest.raises(ValueError, match="at least one"):
        choose_variant({}, "u", "t")
    with pytest.raises(ValueError, match="zero"):
        choose_variant({"a": 0, "b": 0}, "u", "t")
    with pytest.raises(ValueError, match="finite"):
        choose_variant({"a": float("inf"), "b": 1}, "u", "t")
    assert choose_variant({"a": 0, "b": 1}, "u", "t") == "b"


def test_shipped_campaign_push_splits_users_and_reports_the_variant() -> None:
    """Each user sees one campaign push variant, and Content says which."""
    data = MINIMAL_DATA["campaign"]
    seen: dict[str, set[str]] = {"a": set(), "b": set()}
    for number in range(400):
        user_key = f"user-{number}"
        content = STORE.render("campaign", "push", "en", user_key, data)
        again = STORE.render("campaign", "push", "en", user_key, data)
        assert again == content
        seen[content.variant].add(content.title or "")
    assert seen["a"] == {"Summer sale"}
    assert seen["b"] == {"Picked for you"}


def test_weights_come_from_the_files(tmp_path: Path) -> None:
    """A file's weight sets its share; a variant can be forced for a preview."""
    store = store_of(
        tmp_path,
        {
            "promo/push.default.a.toml": push_file("A", extra="weight = 3\n"),
            "promo/push.default.b.toml": push_file("B", version=4),
        },
    )
    bodies = Counter(
        store.render("promo", "push", None, f"u{n}", {}).body for n in range(4000)
    )
    assert abs(bodies["A"] / 4000 - 0.75) < 0.04, bodies
    forced = store.render("promo", "push", None, "u1", {}, variant="b")
    assert (forced.body, forced.variant, forced.version) == ("B", "b", 4)
    with pytest.raises(RenderError, match="no variant 'c'"):
        store.render("promo", "push", None, "u1", {}, variant="c")


# -- escaping and the sandbox ----------------------------------------------------

HOSTILE = "<script>alert('x')</script> & \"friends\""


def test_html_part_is_escaped_and_plain_parts_are_not() -> None:
    """Data is HTML-escaped in the email html part only."""
    data = {**FULL_DATA["campaign"], "message": HOSTILE}
    email = STORE.render("campaign", "email", None, "u", data, USER)
    assert email.html is not None and email.text is not None
    assert "<script>" not in email.html
    assert (
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;friends&#34;"
        in (email.html)
    )
    assert HOSTILE in email.text
    push = STORE.render("campaign", "push", None, "u", data, variant="a")
    assert push.body == HOSTILE
    sms = STORE.render("anything", "sms", None, "u", {"message": HOSTILE})
    assert sms.body == HOSTILE


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__",
        "''.__class__.__mro__[1].__subclasses__()",
        "cycler.__init__.__globals__",
        "tags.append('x')",
        "user.update({'name': 'x'})",
    ],
)
def test_sandbox_blocks_unsafe_access(tmp_path: Path, expression: str) -> None:
    """Templates cannot reach Python internals or change the data they see."""
    declared = '{ required = ["tags"] }' if "tags" in expression else "{}"
    store = store_of(
        tmp_path,
        {"t/push.default.toml": push_file(f"{{{{ {expression} }}}}", data=declared)},
    )
    data = {"tags": ["a"]}
    with pytest.raises(
        RenderError, match=r"t/push\.default\.toml.*body part"
    ) as caught:
        store.render("t", "push", None, "u", data, {"name": "n"})
    assert "unsafe" in caught.value.reason or "undefined" in caught.value.reason
    assert data == {"tags": ["a"]}


def test_runtime_error_names_part_and_line(tmp_path: Path) -> None:
    """A template failing on its data says which file, part and line."""
    store = store_of(
        tmp_path,
        {
            "t/push.default.toml": push_file(
                "Total:\n{{ total // count }}",
                data='{ required = ["total", "count"] }',
            )
        },
    )
    with pytest.raises(RenderError) as caught:
        store.render("t", "push", None, "u", {"total": 10, "count": 0})
    assert caught.value.reason.startswith("t/push.default.toml: body part, line 2:")
    assert "ZeroDivisionError" in caught.value.reason
    assert store.render("t", "push", None, "u", {"total": 10, "count": 5}).body == (
        "Total:\n2"
    )


def test_a_part_rendering_empty_is_an_error(tmp_path: Path) -> None:
    """An empty message is refused here, not by the provider."""
    store = store_of(
        tmp_path,
        {
            "t/push.default.toml": push_file(
                "{{ note }}", data='{ required = ["note"] }'
            )
        },
    )
    with pytest.raises(RenderError, match="body part rendered empty"):
        store.render("t", "push", None, "u", {"note": "  "})


def test_template_sees_user_and_notification(tmp_path: Path) -> None:
    """user and notification are there, and win over data keys of the same name."""
    body = (
        "{{ user.name }}/{{ user.locale }}/"
        "{{ notification.id }}/{{ notification.type }}"
    )
    store = store_of(tmp_path, {"t/push.default.toml": push_file(body)})
    content = store.render(
        "t", "push", "fr", "u", {"user": "spoofed"}, {"name": "Zoé"}, {"id": "n-9"}
    )
    assert content.body == "Zoé/fr/n-9/t"


# -- loading checks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("t/push.default.toml", push_file("{{ broken"), "body part, line 1"),
        ("t/push.default.toml", push_file("{% if x %}open"), "body part"),
        (
            "t/push.default.toml",
            push_file("x", extra="colour = 'red'\n"),
            "unknown keys",
        ),
        ("t/push.default.toml", "version = 1\ntitle = 'x'\n", "missing push parts"),
        ("t/push.default.toml", "version = 1\ntitle = 1\nbody = 'x'\n", "string"),
        ("t/push.default.toml", "title = 'x'\nbody = 'y'\n", "version"),
        ("t/push.default.toml", push_file("x", version=0), "version"),
        ("t/push.default.toml", "version = [", "not valid TOML"),
        ("t/push.default.toml", push_file("x", extra="weight = 2\n"), "weight"),
        ("t/push.default.a.toml", push_file("x", extra="weight = 0\n"), "weight"),
        ("t/push.default.a.toml", push_file("x", extra="weight = nan\n"), "weight"),
        ("t/fax.default.toml", push_file("x"), "unknown channel"),
        ("t/push.toml", push_file("x"), "expected a name"),
        ("t/push.fr_ca.toml", push_file("x"), "expected a name"),
        ("t/push.FR.toml", push_file("x"), "name it 'fr'"),
        ("t/notes.txt", "hello", "not a template file"),
    ],
)
def test_load_refuses_bad_files(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    """Every problem in a file stops the load, with the file named."""
    write(tmp_path, name, text)
    with pytest.raises(TemplateFileError) as caught:
        TemplateStore.load(tmp_path)
    assert str(caught.value).startswith(name)
    assert problem in str(caught.value)


def test_load_refuses_an_incomplete_set(tmp_path: Path) -> None:
    """A type/channel without a default locale, or mixing variants, is refused."""
    write(tmp_path, "t/push.fr.toml", push_file("x"))
    with pytest.raises(TemplateFileError, match=r"^t/push: no push\.default"):
        TemplateStore.load(tmp_path)
    write(tmp_path, "t/push.default.toml", push_file("x"))
    write(tmp_path, "t/push.default.a.toml", push_file("x"))
    with pytest.raises(TemplateFileError, match="either one file or only variant"):
        TemplateStore.load(tmp_path)


def test_load_refuses_a_missing_directory(tmp_path: Path) -> None:
    """A wrong path is an error, not an empty store."""
    with pytest.raises(TemplateFileError, match="no such template directory"):
        TemplateStore.load(tmp_path / "nowhere")


def test_every_channel_demands_its_parts(tmp_path: Path) -> None:
    """An email without its html part is refused, one with all three loads."""
    write(tmp_path, "t/email.default.toml", "version = 1\nsubject = 's'\ntext = 't'\n")
    with pytest.raises(TemplateFileError, match=r"missing email parts \['html'\]"):
        TemplateStore.load(tmp_path)
    write(
        tmp_path,
        "t/email.default.toml",
        "version = 2\ndata.required = ['x']\n"
        "subject = 's'\ntext = 't'\nhtml = '<p>{{ x }}</p>'\n",
    )
    content = TemplateStore.load(tmp_path).render("t", "email", None, "u", {"x": "<b>"})
    assert (content.subject, content.text, content.html) == (
        "s",
        "t",
        "<p>&lt;b&gt;</p>",
    )
    assert content.version == 2
