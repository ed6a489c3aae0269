"""Templates: one sandboxed jinja2 file per (type, channel, locale, A/B variant).

The files live under ``pipeline/templates/<type>/`` and are named
``<channel>.<locale>[.<variant>].toml``. Each holds ``version = N``, an optional
``weight`` (the variant's share of users, default 1) and the parts its channel
needs, each a jinja2 template string:

    push    title, body
    email   subject, text, html
    sms     body
    in_app  title, body

Each file also declares the request ``data`` its parts read, beside the version:

    data.required = ["order_id"]            # keys the data must have
    data.any_of = [["code", "reset_url"]]   # at least one key of each group
    data.optional = ["carrier"]             # read only behind a guard

Dotted keys keep the declaration at the top; a ``[data]`` table also works,
but only after the parts, since its header would swallow the keys below it. A
file that reads no data says ``data = {}``. The declaration is not optional, in
any template directory: a file without one, or one naming other variables than
its parts read (``user`` and ``notification`` excepted), stops the load, so it
cannot be forgotten or drift. ``missing_data`` uses it to refuse a request
before it is queued rather than fail it at send time.

A message is rendered from the most specific file that exists: the type's own
templates for the channel in the user's locale chain (``fr-CA``, ``fr``,
``default``), else the ``default`` type's. Every file is compiled when the
store loads, so a broken file stops the worker at start-up, not one message at a
time at send time.

Templates see the request's ``data`` as top-level names, plus ``user`` (locale,
name if known) and ``notification`` (id, type, created_at); those two names win
over a ``data`` key of the same name. Names are strict: a template that uses a
name the data lacks fails with ``RenderError`` unless it gives a ``default``.
A JSON ``null`` prints as nothing, never as "None". Only the email ``html`` part
is HTML-escaped.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.errors import PermanentError
from pipeline.providers.base import Content

#: The templates beside this module; the package-data must ship them.
DEFAULT_TEMPLATES_PATH = Path(__file__).with_name("templates")
#: The template type that stands for every type without templates of its own.
DEFAULT_TYPE = "default"
#: The last locale of every chain: the file every (type, channel) must have.
DEFAULT_LOCALE = "default"

#: The parts each channel's templates must define, in the order they render.
CHANNEL_PARTS: Mapping[str, tuple[str, ...]] = {
    "push": ("title", "body"),
    "email": ("subject", "text", "html"),
    "sms": ("body",),
    "in_app": ("title", "body"),
}
# Parts shown on one line (a push title, an email subject): a newline from the
# data must not split them, and in a subject it could inject a mail header.
_ONE_LINE_PARTS = frozenset({"title", "subject"})
_SETTINGS_KEYS = frozenset({"version", "weight", "data"})
#: The names ``render`` gives every template itself: never part of ``data``.
CONTEXT_NAMES = frozenset({"user", "notification"})
_DATA_KEYS = ("required", "any_of", "optional")

_FILE_NAME = re.compile(
    r"(?P<channel>[a-z_]+)\.(?P<locale>[A-Za-z0-9-]+)"
    r"(?:\.(?P<variant>[a-z0-9][a-z0-9_-]*))?\.toml"
)
_TYPE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_WHITESPACE = re.compile(r"\s+")
# BCP 47 subtags: a 2-3 letter language, then script, region or variant subtags;
# POSIX names ("pt_BR.UTF-8@euro") carry an encoding and modifier to drop.
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}")
_SUBTAG = re.compile(r"[A-Za-z0-9]{1,8}")
_POSIX_SUFFIX = re.compile(r"[.@].*")


class RenderError(PermanentError):
    """A message that cannot be rendered: ``reason`` names the template and why."""

    def __init__(self, template: str, problem: str) -> None:
        self.template = template
        self.problem = problem
        self.reason = f"{template}: {problem}"
        super().__init__(self.reason)


class TemplateFileError(ValueError):
    """A template file that does not load: the message names the file."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


@lru_cache(maxsize=4096)
def _chain(locale: str | None) -> tuple[str, ...]:
    if locale is None:
        return (DEFAULT_LOCALE,)
    raw = _POSIX_SUFFIX.sub("", locale.strip()).replace("_", "-")
    tags = raw.split("-")
    if not _LANGUAGE.fullmatch(tags[0]) or raw.lower() == DEFAULT_LOCALE:
        return (DEFAULT_LOCALE,)
    normalised = [tags[0].lower()]
    for tag in tags[1:]:
        if not _SUBTAG.fullmatch(tag):
            # What follows a malformed subtag cannot be trusted to mean anything.
            break
        if len(tag) == 4 and tag.isalpha():
            normalised.append(tag.title())  # script: Hant
        elif (len(tag) == 2 and tag.isalpha()) or (len(tag) == 3 and tag.isdigit()):
            normalised.append(tag.upper())  # region: CA, 419
        else:
            normalised.append(tag.lower())
    chain = ["-".join(normalised[:end]) for end in range(len(normalised), 0, -1)]
    return (*chain, DEFAULT_LOCALE)


def locale_chain(locale: str | None) -> list[str]:
    """The locales to try, most specific first: "fr-CA" → fr-CA, fr, default.

    Accepts BCP 47 tags and POSIX names ("pt_BR", "pt_BR.UTF-8") in any case;
    anything that is not a locale falls back to ``["default"]`` rather than
    failing, since the value comes from user profiles.
    """
    return list(_chain(locale))


def normalise_locale(locale: str) -> str:
    """The canonical spelling of a locale ("pt_br" → "pt-BR"), or "default"."""
    return _chain(locale)[0]


def _bucket(user_key: str, type_name: str) -> float:
    """A stable point in [0, 1) for one (user, type): the same on every worker."""
    digest = hashlib.blake2b(
        f"{type_name}\x00{user_key}".encode(), digest_size=8, person=b"notify-ab"
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_variant(
    variants: Mapping[str, float] | Iterable[tuple[str, float]],
    user_key: str,
    type: str,
) -> str:
    """The A/B variant of one user for one type, in proportion to the weights.

    Deterministic per (user, type) and independent of the order the variants
    are listed in, so a user keeps their variant across channels, workers and
    restarts as long as the weights do not change.
    """
    pairs = sorted(variants.items() if isinstance(variants, Mapping) else variants)
    if not pairs:
        raise ValueError("choose_variant needs at least one variant")
    if any(not math.isfinite(weight) or weight < 0 for _, weight in pairs):
        raise ValueError(f"variant weights must be finite and ≥ 0: {pairs}")
    total = float(sum(weight for _, weight in pairs))
    if total <= 0:
        raise ValueError(f"variant weights must not all be zero: {pairs}")
    point = _bucket(user_key, type) * total
    running = 0.0
    for name, weight in pairs:
        running += weight
        if point < running:
            return name
    # Floating-point sums can leave the last sliver uncovered.
    return next(name for name, weight in reversed(pairs) if weight > 0)


@dataclass(frozen=True)
class DataNeeds:
    """The request ``data`` a template reads, as its file declares it."""

    #: Keys the data must have, or rendering fails.
    required: frozenset[str] = frozenset()
    #: Groups of keys of which the data must have at least one each.
    any_of: tuple[frozenset[str], ...] = ()
    #: Keys read only behind a guard (``is defined``, ``default``).
    optional: frozenset[str] = frozenset()

    @property
    def names(self) -> frozenset[str]:
        """Every name declared."""
        return self.required.union(self.optional, *self.any_of)


def _combine(declarations: Iterable[DataNeeds]) -> DataNeeds:
    """What data satisfies every one of ``declarations`` at once."""
    declarations = list(declarations)
    required = frozenset().union(*(needs.required for needs in declarations))
    # A group holding a required name is met whenever that name is given.
    groups = {
        group
        for needs in declarations
        for group in needs.any_of
        if group.isdisjoint(required)
    }
    return DataNeeds(
        required=required,
        any_of=tuple(sorted(groups, key=sorted)),
        optional=frozenset().union(*(needs.optional for needs in declarations))
        - required,
    )


@dataclass(frozen=True, eq=False)
class TemplateFile:
    """One loaded, compiled template file."""

    type: str
    channel: str
    locale: str
    variant: str
    version: int
    weight: float
    name: str  # "<type>/<file name>", how errors refer to it
    parts: Mapping[str, jinja2.Template]
    data: DataNeeds

    def render_parts(self, context: Mapping[str, Any]) -> dict[str, str]:
        """Every part rendered with ``context``, or ``RenderError`` naming the file."""
        rendered: dict[str, str] = {}
        for part, template in self.parts.items():
            try:
                output = template.render(context)
            # Any failure of a render is a property of this template and this
            # data, so it fails the same way on every retry: permanent.
            except Exception as error:
                raise RenderError(
                    self.name, _describe(error, part, template.name)
                ) from error
            output = (
                _WHITESPACE.sub(" ", output).strip()
                if part in _ONE_LINE_PARTS
                else output.strip()
            )
            if not output:
                raise RenderError(self.name, f"{part} part rendered empty")
            rendered[part] = output
        return rendered

    def content(self, context: Mapping[str, Any]) -> Content:
        """The rendered ``Content`` of this file."""
        parts = self.render_parts(context)
        return Content(
            body=parts.get("body", parts.get("text", "")),
            title=parts.get("title"),
            subject=parts.get("subject"),
            html=parts.get("html"),
            text=parts.get("text"),
            template=f"{self.type}/{self.channel}",
            variant=self.variant,
            locale=self.locale,
            version=self.version,
        )


def _describe(error: Exception, part: str, template_name: str | None) -> str:
    line = _template_line(error.__traceback__, template_name)
    where = f"{part} part" + (f", line {line}" if line else "")
    message = getattr(error, "message", None) or str(error)
    return f"{where}: {type(error).__name__}: {message}"


def _template_line(trace: TracebackType | None, template_name: str | None) -> int:
    # jinja2 rewrites the traceback so the template's own frames carry its
    # name as file name and the template's line numbers.
    line = 0
    while trace is not None:
        if template_name and trace.tb_frame.f_code.co_filename == template_name:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def _finalize(value: Any) -> Any:
    # A JSON null in the data would otherwise print as the word "None".
    return "" if value is None else value


def _environment(sources: Mapping[str, str]) -> ImmutableSandboxedEnvironment:
    """The sandbox every template of one store compiles in."""

    def load(name: str) -> tuple[str, str, Any] | None:
        source = sources.get(name)
        return None if source is None else (source, name, lambda: True)

    return ImmutableSandboxedEnvironment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        # Names end in "#<part>": only the email html part is markup.
        autoescape=lambda name: bool(name and name.endswith("#html")),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=-1,
    )


def _file_settings(
    name: str, document: Mapping[str, Any], channel: str
) -> tuple[int, float | None]:
    unknown = set(document) - _SETTINGS_KEYS - set(CHANNEL_PARTS[channel])
    if unknown:
        raise TemplateFileError(
            name,
            f"unknown keys {sorted(unknown)}; a {channel} template has "
            f"{sorted(_SETTINGS_KEYS | set(CHANNEL_PARTS[channel]))}",
        )
    missing = [part for part in CHANNEL_PARTS[channel] if part not in document]
    if missing:
        raise TemplateFileError(name, f"missing {channel} parts {missing}")
    for part in CHANNEL_PARTS[channel]:
        if not isinstance(document[part], str):
            raise TemplateFileError(name, f"part {part!r} must be a string")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TemplateFileError(
            name, f"version must be an integer ≥ 1, not {version!r}"
        )
    weight = document.get("weight")
    if weight is not None and (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight <= 0
    ):
        raise TemplateFileError(name, f"weight must be a number > 0, not {weight!r}")
    return version, None if weight is None else float(weight)


def _declared_names(name: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item.isidentifier() for item in value
    ):
        raise TemplateFileError(
            name, f"{key} must be a list of variable names, not {value!r}"
        )
    return value


def _data_needs(name: str, document: Mapping[str, Any]) -> DataNeeds:
    """The file's ``data`` declaration, checked for shape, not yet against parts."""
    table = document.get("data")
    if table is None:
        raise TemplateFileError(
            name,
            "no data declaration: list the data its parts read as "
            "data.required / data.any_of / data.optional, or data = {} for none",
        )
    if not isinstance(table, dict):
        raise TemplateFileError(
            name, f"data must be a table of {list(_DATA_KEYS)}, not {table!r}"
        )
    unknown = set(table) - set(_DATA_KEYS)
    if unknown:
        raise TemplateFileError(
            name, f"unknown data keys {sorted(unknown)}; one of {list(_DATA_KEYS)}"
        )
    required = _declared_names(name, "data.required", table.get("required", []))
    optional = _declared_names(name, "data.optional", table.get("optional", []))
    raw_groups = table.get("any_of", [])
    if not isinstance(raw_groups, list):
        raise TemplateFileError(
            name, f"data.any_of must be a list of lists of names, not {raw_groups!r}"
        )
    groups = [
        _declared_names(name, f"data.any_of[{index}]", group)
        for index, group in enumerate(raw_groups)
    ]
    for index, group in enumerate(groups):
        if len(group) < 2:
            raise TemplateFileError(
                name,
                f"data.any_of[{index}] needs two names or more; "
                "a single name belongs in data.required",
            )
    declared = [*required, *optional, *(item for group in groups for item in group)]
    twice = sorted({item for item in declared if declared.count(item) > 1})
    if twice:
        raise TemplateFileError(name, f"data declares {twice} more than once")
    reserved = sorted(CONTEXT_NAMES.intersection(declared))
    if reserved:
        raise TemplateFileError(
            name, f"data declares {reserved}, which the renderer gives every template"
        )
    return DataNeeds(
        required=frozenset(required),
        any_of=tuple(frozenset(group) for group in groups),
        optional=frozenset(optional),
    )


@dataclass(frozen=True)
class _Parsed:
    type: str
    channel: str
    locale: str
    variant: str
    version: int
    weight: float
    name: str
    sources: Mapping[str, str]
    data: DataNeeds


def _parse_file(path: Path, type_name: str) -> _Parsed:
    name = f"{type_name}/{path.name}"
    match = _FILE_NAME.fullmatch(path.name)
    if match is None:
        raise TemplateFileError(
            name, "expected a name <channel>.<locale>[.<variant>].toml"
        )
    channel, locale, variant = match["channel"], match["locale"], match["variant"]
    if channel not in CHANNEL_PARTS:
        raise TemplateFileError(
            name, f"unknown channel {channel!r}; one of {sorted(CHANNEL_PARTS)}"
        )
    if locale != DEFAULT_LOCALE and normalise_locale(locale) != locale:
        raise TemplateFileError(
            name,
            f"locale {locale!r} is not canonical; name it {normalise_locale(locale)!r}",
        )
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise TemplateFileError(name, f"not valid TOML: {error}") from error
    version, weight = _file_settings(name, document, channel)
    data = _data_needs(name, document)
    if weight is not None and variant is None:
        raise TemplateFileError(name, "weight is only meaningful on a variant file")
    return _Parsed(
        type=type_name,
        channel=channel,
        locale=locale,
        variant=variant or "",
        version=version,
        weight=1.0 if weight is None else weight,
        name=name,
        sources={part: document[part] for part in CHANNEL_PARTS[channel]},
        data=data,
    )


def _scan(directory: Path) -> Iterator[_Parsed]:
    if not directory.is_dir():
        raise TemplateFileError(str(directory), "no such template directory")
    for type_dir in sorted(directory.iterdir()):
        if type_dir.name.startswith((".", "_")):
            continue  # editor files, __pycache__
        if not type_dir.is_dir() or not _TYPE_NAME.fullmatch(type_dir.name):
            raise TemplateFileError(
                type_dir.name, "expected one directory per notification type"
            )
        for path in sorted(type_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir() or path.suffix != ".toml":
                raise TemplateFileError(
                    f"{type_dir.name}/{path.name}", "not a template file (*.toml)"
                )
            yield _parse_file(path, type_dir.name)


def _compile(parsed: Sequence[_Parsed]) -> list[TemplateFile]:
    sources = {
        f"{item.name}#{part}": source
        for item in parsed
        for part, source in item.sources.items()
    }
    environment = _environment(sources)
    files = []
    for item in parsed:
        compiled = {}
        for part in item.sources:
            try:
                compiled[part] = environment.get_template(f"{item.name}#{part}")
            except jinja2.TemplateSyntaxError as error:
                raise TemplateFileError(
                    item.name, f"{part} part, line {error.lineno}: {error.message}"
                ) from error
        _check_declaration(item, environment)
        files.append(
            TemplateFile(
                type=item.type,
                channel=item.channel,
                locale=item.locale,
                variant=item.variant,
                version=item.version,
                weight=item.weight,
                name=item.name,
                parts=compiled,
                data=item.data,
            )
        )
    return files


def _check_declaration(item: _Parsed, environment: jinja2.Environment) -> None:
    """The file's ``data`` declaration names exactly the data its parts read."""
    read: set[str] = set()
    for source in item.sources.values():
        read |= meta.find_undeclared_variables(environment.parse(source))
    read -= CONTEXT_NAMES
    undeclared = read - item.data.names
    if undeclared:
        raise TemplateFileError(
            item.name,
            f"its parts read {sorted(undeclared)}, which data does not declare",
        )
    unread = item.data.names - read
    if unread:
        raise TemplateFileError(
            item.name, f"data declares {sorted(unread)}, which no part reads"
        )


@dataclass(frozen=True)
class _Group:
    """The files of one (type, channel, locale): one, or one per A/B variant."""

    files: Mapping[str, TemplateFile]  # by variant; "" when the file has none
    # Sorted once here: choose_variant runs on every message.
    weights: tuple[tuple[str, float], ...]

    def pick(self, user_key: str, type_name: str, forced: str | None) -> TemplateFile:
        """The forced variant, the only file, or the user's variant by weight."""
        if forced is not None:
            file = self.files.get(forced)
            if file is None:
                some = next(iter(self.files.values()))
                raise RenderError(
                    some.name, f"no variant {forced!r}; has {sorted(self.files)}"
                )
            return file
        if len(self.weights) == 1:
            return self.files[self.weights[0][0]]
        return self.files[choose_variant(self.weights, user_key, type_name)]


class TemplateStore:
    """Every template file, compiled once, and the rules that pick one."""

    def __init__(self, files: Iterable[TemplateFile]) -> None:
        # (type, channel) → locale → variant → file
        tree: dict[tuple[str, str], dict[str, dict[str, TemplateFile]]] = {}
        for file in files:
            variants = tree.setdefault((file.type, file.channel), {}).setdefault(
                file.locale, {}
            )
            if file.variant in variants:
                raise TemplateFileError(file.name, "duplicate template")
            variants[file.variant] = file
        for (type_name, channel), locales in tree.items():
            if DEFAULT_LOCALE not in locales:
                raise TemplateFileError(
                    f"{type_name}/{channel}",
                    f"no {channel}.{DEFAULT_LOCALE}[.<variant>].toml: every "
                    "(type, channel) needs one for the locales it lacks",
                )
            for locale, variants in locales.items():
                if "" in variants and len(variants) > 1:
                    raise TemplateFileError(
                        f"{type_name}/{channel}.{locale}",
                        "a locale has either one file or only variant files",
                    )
        self._index = {
            key: {
                locale: _Group(
                    files=variants,
                    weights=tuple(sorted((v, f.weight) for v, f in variants.items())),
                )
                for locale, variants in locales.items()
            }
            for key, locales in tree.items()
        }
        # What every file of a (type, channel) needs together, whatever the
        # locale or variant a user gets: computed once for missing_data.
        self._needs = {
            key: _combine(
                file.data for variants in locales.values() for file in variants.values()
            )
            for key, locales in tree.items()
        }

    @classmethod
    def load(cls, directory: Path | None = None) -> TemplateStore:
        """Read, validate and compile every file (the packaged ones by default).

        Raises ``TemplateFileError`` naming the first file that is not valid:
        a bad name, unknown keys, parts missing for the channel, bad TOML or
        jinja2 syntax, a (type, channel) without a default-locale file.
        """
        return cls(_compile(list(_scan(directory or DEFAULT_TEMPLATES_PATH))))

    def files(self) -> list[TemplateFile]:
        """Every loaded file, in a stable order."""
        return [
            file
            for key in sorted(self._index)
            for locale in sorted(self._index[key])
            for _, file in sorted(self._index[key][locale].files.items())
        ]

    def needs(self, type_name: str, channel: str) -> DataNeeds | None:
        """The data every file that could render this type on ``channel`` needs.

        The type's own files for the channel, else the ``default`` type's (as
        ``select`` falls back), across all their locales and variants; ``None``
        when neither has a file for the channel.
        """
        needs = self._needs.get((type_name, channel))
        return needs if needs is not None else self._needs.get((DEFAULT_TYPE, channel))

    def missing_data(
        self, type_name: str, channels: Iterable[str], data: Mapping[str, Any]
    ) -> list[str]:
        """The names of required ``data`` this request lacks, sorted; [] if none.

        Checks every file that could render the type on ``channels``, whatever
        the user's locale or A/B variant turns out to be (see ``needs``). A key
        present with a null value counts as given: it renders as nothing, as
        it does in ``render``. An ``any_of`` group with none of its keys given
        is named by its keys joined with "|" ("code|reset_url"), unless a
        required name also missing belongs to it. A channel with no template
        adds nothing here; ``render`` reports it.
        """
        if isinstance(channels, str):
            # A bare "email" would be read as channels "e", "m", ...: none.
            raise TypeError("channels must be a collection of channel names")
        missing: set[str] = set()
        unmet: list[frozenset[str]] = []
        for channel in channels:
            needs = self.needs(type_name, channel)
            if needs is None:
                continue
            missing.update(name for name in needs.required if name not in data)
            unmet.extend(
                group
                for group in needs.any_of
                if not any(name in data for name in group)
            )
        named = {
            "|".join(sorted(group)) for group in unmet if group.isdisjoint(missing)
        }
        return sorted(missing | named)

    def select(
        self,
        type: str,
        channel: str,
        locale: str | None,
        user_key: str,
        *,
        variant: str | None = None,
    ) -> TemplateFile:
        """The file ``render`` would use, or ``RenderError`` if there is none.

        ``variant`` forces one A/B variant (a preview); by default the user's
        own is chosen by weight.
        """
        if channel not in CHANNEL_PARTS:
            raise RenderError(f"{type}/{channel}", f"unknown channel {channel!r}")
        for type_name in (type, DEFAULT_TYPE):
            locales = self._index.get((type_name, channel))
            if locales is None:
                continue
            # Every (type, channel) has a default-locale file, so this returns.
            for candidate in _chain(locale):
                group = locales.get(candidate)
                if group is not None:
                    return group.pick(user_key, type, variant)
        raise RenderError(
            f"{type}/{channel}",
            f"no template for {type!r} nor {DEFAULT_TYPE!r} on {channel}",
        )

    def render(
        self,
        type: str,
        channel: str,
        locale: str | None,
        user_key: str,
        data: Mapping[str, Any],
        user: Mapping[str, Any] | None = None,
        notification: Mapping[str, Any] | None = None,
        *,
        variant: str | None = None,
    ) -> Content:
        """Render one message: the right file for the type, channel, locale, user.

        Falls back along the locale chain, then to the ``default`` type's
        templates for the channel. Raises ``RenderError`` (permanent) when no
        template applies or the template fails on this data.
        """
        file = self.select(type, channel, locale, user_key, variant=variant)
        user_vars = dict(user or {})
        user_vars.setdefault("locale", locale)
        context = {
            **data,
            "user": user_vars,
            "notification": {"type": type, **(notification or {})},
        }
        return file.content(context)
