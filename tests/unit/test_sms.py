"""SMS length policy: GSM-7/UCS-2 segment counts and truncation with an ellipsis."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.sms import ELLIPSIS, encoding, fit, is_gsm7, segments, units

# Characters that stress the encoder: GSM basics, GSM extension characters
# (two septets), non-GSM BMP letters, astral emoji (surrogate pairs), combining
# marks, joiners, skin-tone modifiers and regional indicators (flags).
TRICKY = [
    "a",
    " ",
    "@",
    "é",
    "€",
    "[",
    "{",
    "^",
    "\f",
    "ж",
    "中",
    "😀",
    "👍",
    "\U0001f3fd",
    "\u200d",
    "\u0301",
    "\ufe0f",
    "🇫",
    "🇷",
    "\r",
    "\n",
]
texts = st.text(alphabet=st.sampled_from(TRICKY), max_size=700) | st.text(max_size=400)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 septets: every extension character costs two
        ("€" * 81, 2),
        ("a" * 152 + "€" + "a" * 152, 3),  # the escape pair is not split
        ("ж" * 70, 1),
        ("ж" * 71, 2),
        ("ж" * 134, 2),
        ("ж" * 135, 3),
        ("😀" * 35, 1),  # 70 UTF-16 code units
        ("😀" * 36, 2),
        ("a" * 66 + "😀" + "a" * 67, 3),  # the surrogate pair is not split
        ("Your code is 123456", 1),
    ],
)
def test_segments_of_known_texts(text: str, expected: int) -> None:
    assert segments(text) == expected


def test_encoding_detection() -> None:
    assert is_gsm7("Hello @ £5 {ok} €")
    assert encoding("Ça va? ÄÖÜ") == "GSM-7"
    assert encoding("Привет") == "UCS-2"
    assert encoding("smart “quotes”") == "UCS-2"
    assert units("€[]") == 6
    assert units("😀a") == 3


def test_fit_keeps_text_that_fits() -> None:
    assert fit("a" * 160, 1) == "a" * 160
    assert fit("ж" * 134, 2) == "ж" * 134


def test_fit_counts_the_ellipsis_as_ucs2() -> None:
    # GSM text made to end with "…" becomes UCS-2: 3 x 67 units, one of them "…".
    fitted = fit("a" * 1000, 3)
    assert fitted == "a" * 200 + ELLIPSIS
    assert segments(fitted) == 3


def test_fit_drops_trailing_space_and_cuts_on_characters() -> None:
    fitted = fit("hello world " * 30, 1)
    assert fitted == ("hello world " * 6)[:69].rstrip() + ELLIPSIS
    assert fit("😀" * 100, 1) == "😀" * 34 + ELLIPSIS  # 68 units + 1


def test_fit_never_separates_a_flag_or_an_accent() -> None:
    flags = "🇫🇷" * 40  # 80 regional indicators, 160 code units
    fitted = fit(flags, 1)
    assert fitted.endswith(ELLIPSIS)
    assert len(fitted[:-1]) % 2 == 0
    accented = "e\u0301" * 100
    kept = fit(accented, 1)[:-1]
    assert kept == "e\u0301" * (len(kept) // 2)


def test_fit_refuses_zero_segments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        fit("hi", 0)


@given(text=texts, max_segments=st.integers(min_value=1, max_value=6))
def test_fit_always_fits(text: str, max_segments: int) -> None:
    assert segments(fit(text, max_segments)) <= max_segments


@given(text=texts, max_segments=st.integers(min_value=1, max_value=6))
def test_fit_keeps_short_text_intact(text: str, max_segments: int) -> None:
    if segments(text) <= max_segments:
        assert fit(text, max_segments) == text
    else:
        assert fit(text, max_segments).endswith(ELLIPSIS)


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


@given(text=texts, max_segments=st.integers(min_value=1, max_value=6))
def test_fit_never_splits_a_character(text: str, max_segments: int) -> None:
    fitted = fit(text, max_segments)
    if fitted == text:
        return
    kept = fitted[: -len(ELLIPSIS)]
    assert text.startswith(kept)
    fitted.encode("utf-16")  # valid Unicode: no half of a surrogate pair
    following = text[len(kept)]
    # The character after the cut does not belong to the one before it.
    assert unicodedata.category(following) not in ("Mn", "Me", "Mc")
    assert not 0x1F3FB <= ord(following) <= 0x1F3FF
    assert following != "\u200d" and not kept.endswith("\u200d")
    if kept and _is_regional_indicator(following):
        run = len(kept) - len(kept.rstrip("".join(map(chr, range(0x1F1E6, 0x1F200)))))
        assert run % 2 == 0  # a flag is a pair of regional indicators


# No combining characters and no spaces: every position is a cut point.
plain_texts = st.text(alphabet=st.sampled_from("ab@€[ж中😀"), max_size=700)


@given(text=plain_texts, max_segments=st.integers(min_value=1, max_value=4))
def test_fit_keeps_as_much_as_fits(text: str, max_segments: int) -> None:
    fitted = fit(text, max_segments)
    if fitted == text:
        return
    kept = fitted[: -len(ELLIPSIS)]
    assert segments(text[: len(kept) + 1] + ELLIPSIS) > max_segments
