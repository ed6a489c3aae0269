"""How long an SMS is, in segments, and how it is made to fit.

Policy: an SMS body longer than ``max_segments`` is truncated on a character
boundary and ends with an ellipsis ("…"), so it fits in ``max_segments``
segments. It is never split into separate SMS and never dropped.

Encoding follows GSM 03.38: a text made only of the GSM-7 basic table and its
extension table is sent as GSM-7, where an extension character (``€``, ``[``,
``{``, ...) costs two septets (escape + code); anything else switches the whole
message to UCS-2, where a character outside the Basic Multilingual Plane costs
two UTF-16 code units. A single message holds 160 septets (GSM-7) or 70 code
units (UCS-2); a concatenated one loses room to its header and holds 153 septets
or 67 code units per segment. A two-unit character is never split across two
segments, so a segment may hold one unit less than its capacity.

"…" is not a GSM character: a truncated message is always counted, and sent,
as UCS-2, which ``fit`` accounts for.
"""

from __future__ import annotations

import unicodedata

#: GSM 03.38 basic character set, less the escape (0x1B) to the extension table.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table: each costs the escape septet plus its own.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

ELLIPSIS = "…"

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

_ZWJ = "\u200d"


def is_gsm7(text: str) -> bool:
    """True if every character of ``text`` is in the GSM-7 tables."""
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def _unit_sizes(text: str) -> tuple[list[int], int, int]:
    """Units per character, and the single and per-part capacities in units."""
    if is_gsm7(text):
        sizes = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return sizes, GSM7_SINGLE, GSM7_PART
    sizes = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return sizes, UCS2_SINGLE, UCS2_PART


def units(text: str) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) the text takes."""
    return sum(_unit_sizes(text)[0])


def encoding(text: str) -> str:
    """``"GSM-7"`` or ``"UCS-2"``: what the text is sent as."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def segments(text: str) -> int:
    """How many SMS segments ``text`` is sent as (an empty text still takes one)."""
    sizes, single, part = _unit_sizes(text)
    if sum(sizes) <= single:
        return 1
    count, used = 1, 0
    for size in sizes:
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _extends(char: str) -> bool:
    """Whether ``char`` attaches to the character before it (UAX #29 Extend)."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or char == _ZWJ
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
    )


def is_boundary(text: str, index: int) -> bool:
    """Whether cutting ``text`` at ``index`` keeps every visible character whole.

    An approximation of UAX #29 grapheme clusters that needs no data tables:
    never between CR and LF, before a combining mark, modifier or joiner, after
    a zero-width joiner, or inside a regional-indicator pair (a flag).
    """
    if index <= 0 or index >= len(text):
        return True
    before, after = text[index - 1], text[index]
    if before == "\r" and after == "\n":
        return False
    if _extends(after) or before == _ZWJ:
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(after):
        run = 0
        while run < index and _is_regional_indicator(text[index - 1 - run]):
            run += 1
        return run % 2 == 0
    return True


def fit(text: str, max_segments: int, ellipsis: str = ELLIPSIS) -> str:
    """``text`` unchanged if it fits in ``max_segments``, else cut and ellipsized.

    The cut keeps the longest prefix, on a character boundary, that fits once
    the ellipsis is appended (counted in the encoding the result ends up in);
    trailing whitespace before the ellipsis is dropped.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    if segments(text) <= max_segments:
        return text
    if segments(ellipsis) > max_segments:
        raise ValueError(f"the ellipsis {ellipsis!r} alone needs more segments")
    cuts = [index for index in range(len(text)) if is_boundary(text, index)]
    # Segments only grow as the prefix grows (GSM-7 never packs fewer
    # characters than UCS-2), so the longest fitting prefix is found by bisection.
    low, high = 0, len(cuts) - 1  # cuts[0] == 0: the ellipsis alone fits
    while low < high:
        middle = (low + high + 1) // 2
        if segments(text[: cuts[middle]] + ellipsis) <= max_segments:
            low = middle
        else:
            high = middle - 1
    kept = text[: cuts[low]]
    stripped = kept.rstrip()
    if is_boundary(text, len(stripped)):
        kept = stripped
    return kept + ellipsis
