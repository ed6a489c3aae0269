"""Template data declarations: true to each body, and what missing_data refuses."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2 import meta

from pipeline.rendering import (
    CHANNEL_PARTS,
    CONTEXT_NAMES,
    DEFAULT_TEMPLATES_PATH,
    RenderError,
    TemplateFile,
    TemplateFileError,
    TemplateStore,
)

STORE = TemplateStore.load()
SHIPPED = STORE.files()
# Values shaped like real data where a template looks inside them; any other
# name gets a plain string.
SAMPLES: dict[str, Any] = {
    "items": [{"name": "Tea pot", "quantity": 2}, {"name": "Cups"}],
    "expires_in_minutes": 15,
    "count": 3,
    "first": {"liker": "Ann"},
}


def sample(name: str) -> Any:
    """A value for the data name ``name``."""
    return SAMPLES.get(name, f"{name}-value")


def read_names(file: TemplateFile) -> set[str]:
    """Every name the file's parts read from their context, by their syntax tree."""
    document = tomllib.loads((DEFAULT_TEMPLATES_PATH / file.name).read_text())
    environment = jinja2.Environment(autoescape=False)  # noqa: S701 - parse only
    names: set[str] = set()
    for part in CHANNEL_PARTS[file.channel]:
        names |= meta.find_undeclared_variables(environment.parse(document[part]))
    return names


def render(file: TemplateFile, data: dict[str, Any]) -> None:
    """Render ``file`` itself (its locale and variant) with ``data`` and no name."""
    content = STORE.render(
        file.type,
        file.channel,
        file.locale,
        "user-1",
        data,
        variant=file.variant or None,
    )
    assert (content.template, content.locale, content.variant) == (
        f"{file.type}/{file.channel}",
        file.locale,
        file.variant,
    )


def minimal_data(file: TemplateFile) -> list[dict[str, Any]]:
    """The required names with one name of each any_of group, every way."""
    required = {name: sample(name) for name in file.data.required}
    choices = itertools.product(*(sorted(group) for group in file.data.any_of))
    return [
        {**required, **{name: sample(name) for name in chosen}} for chosen in choices
    ]


def ids(file: TemplateFile) -> str:
    """A readable test id."""
    return file.name


# -- every shipped template declares what its body reads --------------------------


def test_every_shipped_file_is_covered() -> None:
    """The store holds every file on disk, so the checks below miss none."""
    on_disk = sorted(
        f"{path.parent.name}/{path.name}"
        for path in DEFAULT_TEMPLATES_PATH.glob("*/*.toml")
    )
    assert sorted(file.name for file in SHIPPED) == on_disk


@pytest.mark.parametrize("file", SHIPPED, ids=ids)
def test_declaration_names_exactly_what_the_body_reads(file: TemplateFile) -> None:
    """Each name a part reads is declared, and each declared name is read."""
    read = read_names(file) - CONTEXT_NAMES
    declared = file.data.names
    assert read - declared == set(), "read but not declared"
    assert declared - read == set(), "declared but never read"
    assert not CONTEXT_NAMES & declared


@pytest.mark.parametrize("file", SHIPPED, ids=ids)
def test_required_data_is_enough(file: TemplateFile) -> None:
    """Required data alone (one name per any_of group) renders every part."""
    for data in minimal_data(file):
        render(file, data)


@pytest.mark.parametrize("file", SHIPPED, ids=ids)
def test_all_declared_data_renders(file: TemplateFile) -> None:
    """Every declared name given at once renders too."""
    render(file, {name: sample(name) for name in file.data.names})


@pytest.mark.parametrize("file", SHIPPED, ids=ids)
def test_each_required_name_is_needed(file: TemplateFile) -> None:
    """Without one required name, or a whole any_of group, rendering fails."""
    for data in minimal_data(file):
        for name in file.data.required:
            lacking = {key: value for key, value in data.items() if key != name}
            with pytest.raises(RenderError, match=f"'{name}' is undefined"):
                render(file, lacking)
        for group in file.data.any_of:
            lacking = {key: value for key, value in data.items() if key not in group}
            with pytest.raises(RenderError, match="is undefined"):
                render(file, lacking)


# -- missing_data on the shipped templates ----------------------------------------

CAMPAIGN = {"headline": "Summer sale", "message": "30% off until Sunday."}


def test_campaign_email_without_headline() -> None:
    """The request that used to fail at send time is named at the door."""
    assert STORE.missing_data("campaign", ["email"], {"message": "m"}) == ["headline"]
    assert STORE.missing_data("campaign", ["email", "push"], {}) == [
        "headline",
        "message",
    ]
    with pytest.raises(RenderError, match="'headline' is undefined"):
        STORE.render("campaign", "email", None, "u", {"message": "m"})


def test_a_complete_request_lacks_nothing() -> None:
    """Required data present, optional absent, extra keys ignored: nothing lacks."""
    channels = ["email", "push", "sms", "in_app"]
    assert STORE.missing_data("campaign", channels, CAMPAIGN) == []
    assert STORE.missing_data("campaign", channels, {**CAMPAIGN, "extra": 1}) == []
    assert STORE.missing_data("password_changed", ["email", "push"], {}) == []
    assert STORE.missing_data("order_shipped", [], {}) == []


def test_only_the_requested_channels_count() -> None:
    """A code alone does for an SMS reset, not for the email with its link."""
    code = {"code": "482913"}
    assert STORE.missing_data("password_reset", ["sms"], code) == []
    assert STORE.missing_data("password_reset", ["email"], code) == ["reset_url"]
    assert STORE.missing_data("password_reset", ["email", "sms"], code) == ["reset_url"]
    link = {"reset_url": "https://app.example.com/reset?token=abc"}
    assert STORE.missing_data("password_reset", ["email", "sms"], link) == []


def test_an_unmet_any_of_group_is_named_by_its_names() -> None:
    """No code nor link: the SMS names both; with the email, the link says it all."""
    assert STORE.missing_data("password_reset", ["sms"], {}) == ["code|reset_url"]
    assert STORE.missing_data("password_reset", ["sms", "email"], {}) == ["reset_url"]


def test_null_counts_as_given() -> None:
    """A null value is present for StrictUndefined: it renders as nothing."""
    assert STORE.missing_data("order_shipped", ["push"], {"order_id": None}) == []
    content = STORE.render("order_shipped", "push", None, "u", {"order_id": None})
    assert content.title == "Your order has shipped"
    assert STORE.missing_data("order_shipped", ["push"], {}) == ["order_id"]
    with pytest.raises(RenderError, match="'order_id' is undefined"):
        STORE.render("order_shipped", "push", None, "u", {})
    # missing_data judges absence only: a null that leaves a whole part empty
    # is refused when it renders, by the empty-part rule.
    headline_null = {**CAMPAIGN, "headline": None}
    assert STORE.missing_data("campaign", ["email"], headline_null) == []
    with pytest.raises(RenderError, match="subject part rendered empty"):
        STORE.render("campaign", "email", None, "u", headline_null)


def test_shipped_types_fall_back_to_the_default_type() -> None:
    """A type without its own channel, or unknown, is held to the default's."""
    assert STORE.needs("order_shipped", "in_app") == STORE.needs("default", "in_app")
    assert STORE.missing_data("order_shipped", ["in_app"], {"order_id": "1"}) == []
    assert STORE.missing_data("no_such_type", ["sms", "email"], {}) == []
    assert STORE.needs("order_shipped", "fax") is None
    assert STORE.missing_data("order_shipped", ["fax"], {}) == []


def test_channels_must_be_a_collection() -> None:
    """One channel name passed bare is a caller bug, not a request lacking nothing."""
    with pytest.raises(TypeError, match="collection of channel names"):
        STORE.missing_data("campaign", "email", {})


# -- missing_data on stores of our own --------------------------------------------


def write(directory: Path, files: dict[str, str]) -> TemplateStore:
    """A store of ``files`` (relative name → text)."""
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return TemplateStore.load(directory)


def push(body: str, data: str = "{}", *, extra: str = "") -> str:
    """A push template file's text; ``data`` is its declaration, a TOML table."""
    return f"version = 1\ndata = {data}\n{extra}title = 'T'\nbody = '''{body}'''\n"


def test_every_locale_and_variant_counts(tmp_path: Path) -> None:
    """The user's locale and variant are not known yet: any file's need counts."""
    store = write(
        tmp_path,
        {
            "greet/push.default.toml": push("{{ a }}", '{ required = ["a"] }'),
            "greet/push.fr.toml": push("{{ b }}", '{ required = ["b"] }'),
            "promo/push.default.x.toml": push("{{ c }}", '{ required = ["c"] }'),
            "promo/push.default.y.toml": push(
                "{{ d }}{{ e | default('') }}",
                '{ required = ["d"], optional = ["e"] }',
            ),
        },
    )
    assert store.missing_data("greet", ["push"], {}) == ["a", "b"]
    assert store.missing_data("greet", ["push"], {"b": 1}) == ["a"]
    assert store.missing_data("promo", ["push"], {"c": 1}) == ["d"]
    assert store.missing_data("promo", ["push"], {"c": 1, "d": 2}) == []


def test_fallback_mirrors_select(tmp_path: Path) -> None:
    """The default type's needs apply where select would use its file, only there."""
    store = write(
        tmp_path,
        {
            "default/push.default.toml": push("{{ m }}", '{ required = ["m"] }'),
            "default/sms.default.toml": "version = 1\ndata = {}\nbody = 'hi'\n",
            "own/push.default.toml": push("{{ n }}", '{ required = ["n"] }'),
            "own/sms.default.toml": (
                "version = 1\ndata.required = ['s']\nbody = '{{ s }}'\n"
            ),
        },
    )
    assert store.missing_data("own", ["push"], {}) == ["n"]
    assert store.missing_data("other", ["push"], {}) == ["m"]
    assert store.missing_data("other", ["push", "sms"], {}) == ["m"]
    assert store.missing_data("own", ["push", "sms"], {}) == ["n", "s"]
    for type_name, data in (("own", {"n": 1}), ("other", {"m": 1})):
        assert store.missing_data(type_name, ["push"], data) == []
        assert store.render(type_name, "push", "fr", "u", data).body == "1"


def test_a_data_table_at_the_end_works_too(tmp_path: Path) -> None:
    """A [data] header after the parts is the same declaration."""
    text = "version = 1\ntitle = 'T'\nbody = '{{ a }}'\n\n[data]\nrequired = ['a']\n"
    store = write(tmp_path, {"t/push.default.toml": text})
    assert store.missing_data("t", ["push"], {}) == ["a"]


# -- malformed declarations --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "version = 1\ntitle = 'T'\nbody = 'x'\n",
            "no data declaration",
        ),
        (push("x", "1"), "data must be a table"),
        (push("x", "{ needs = ['a'] }"), "unknown data keys ['needs']"),
        (push("{{ a }}", "{ required = 'a' }"), "data.required must be a list"),
        (push("x", "{ required = [1] }"), "data.required must be a list"),
        (push("x", "{ optional = ['a b'] }"), "data.optional must be a list"),
        (push("x", "{ any_of = 'a' }"), "data.any_of must be a list of lists"),
        (push("x", "{ any_of = ['a'] }"), "data.any_of[0] must be a list"),
        (
            push("{{ a }}", "{ any_of = [['a']] }"),
            "data.any_of[0] needs two names or more",
        ),
        (
            push("{{ a }}", "{ required = ['a'], optional = ['a'] }"),
            "declares ['a'] more than once",
        ),
        (
            push("{{ a | default(b) }}", "{ any_of = [['a', 'b'], ['b', 'a']] }"),
            "more than once",
        ),
        (
            push("{{ user.name }}", "{ optional = ['user'] }"),
            "the renderer gives every template",
        ),
        (
            push("{{ a }}{{ b | default('') }}", "{ required = ['a'] }"),
            "its parts read ['b'], which data does not declare",
        ),
        (
            push("{{ a }}", "{ required = ['a', 'z'] }"),
            "data declares ['z'], which no part reads",
        ),
    ],
)
def test_load_refuses_a_bad_declaration(
    tmp_path: Path, text: str, problem: str
) -> None:
    """A declaration that is malformed or untrue to the parts stops the load."""
    with pytest.raises(TemplateFileError) as caught:
        write(tmp_path, {"t/push.default.toml": text})
    assert str(caught.value).startswith("t/push.default.toml: ")
    assert problem in str(caught.value)
