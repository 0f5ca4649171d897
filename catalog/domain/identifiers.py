"""Normalisation, check characters, validators and PIPL masks for the identifiers agencies
exchange.

Quality gates and the exchange layer need the same answers for "is this a real ID /
credit code / mobile number" and "what does a consumer see instead"; keeping the rules in
one set of pure functions lets both the Python side and the tests agree, and the DuckDB
SQL (``catalog.access.masking.mask_sql``, ``expectations.sql.macros``) is generated from the
same constants (:data:`FOLD_FROM` / :data:`FOLD_TO`, the same regular expressions) so
that it cannot drift.

One normalisation (:func:`normalize_identifier`, :func:`normalize_phone`) runs before
validation *and* before masking: agencies' exports write the same number as
``１３８ 1234-5678``, ``+86 138 1234 5678`` or ``11010519491231002x``, and a mask applied
to the raw text would keep different characters for each (``+86`` instead of the first
digits, full-width digits that a later search treats as other characters).

Validators answer ``False`` for anything malformed instead of raising, because they are
used as row predicates over dirty data; the check-character functions raise
``ValueError`` because a caller computing a check character is building a code and
handing them garbage is a bug.
"""

from __future__ import annotations

import re
from datetime import date

from catalog.domain.regions import id_prefix_known

# --- Normalisation -------------------------------------------------------------------

_SEPARATORS = (
    " \t\n\r\f\v"
    "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"  # spaces, ideographic space included
    "\u200b\u200c\u200d\u2060\ufeff"  # zero-width characters
    "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"  # dashes, minus signs
)
_FULLWIDTH_DIGITS = "".join(chr(0xFF10 + i) for i in range(10))
_FULLWIDTH_UPPER = "".join(chr(0xFF21 + i) for i in range(26))
_FULLWIDTH_LOWER = "".join(chr(0xFF41 + i) for i in range(26))
_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

FOLD_FROM = (
    _FULLWIDTH_DIGITS + _FULLWIDTH_UPPER + _FULLWIDTH_LOWER + _ASCII_UPPER.lower() + "\uff0b"
) + _SEPARATORS
"""Characters :func:`normalize_identifier` changes: the first ``len(FOLD_TO)`` become
the character at the same place of :data:`FOLD_TO`, the rest (separators) are dropped —
exactly DuckDB's ``translate(s, FOLD_FROM, FOLD_TO)``."""

FOLD_TO = "0123456789" + _ASCII_UPPER * 3 + "+"
"""Full-width digits → ASCII, letters (full-width or lower-case ASCII) → upper-case
ASCII, full-width plus → ``+``."""

_FOLD_TABLE: dict[int, str | None] = {
    ord(ch): (FOLD_TO[i] if i < len(FOLD_TO) else None) for i, ch in enumerate(FOLD_FROM)
}

PHONE_PREFIX_RE = r"^(\+86|0086|86)(1[0-9]{10})$"
"""A mainland mobile number written with the country code (``+86``, ``0086``, ``86``)
after folding; group 2 is the number.  The same text in Python and DuckDB (RE2)."""

_PHONE_PREFIX = re.compile(PHONE_PREFIX_RE)


def normalize_identifier(s: str) -> str:
    """``s`` with full-width characters folded to ASCII, letters upper-cased (ASCII only)
    and spaces, zero-width characters and dashes removed: ``１１０１０５ 1949-1231 002x``
    → ``11010519491231002X``."""
    return s.translate(_FOLD_TABLE)


def normalize_phone(s: str) -> str:
    """:func:`normalize_identifier`, then a ``+86``/``0086``/``86`` country code in front
    of an 11-digit mobile number dropped: ``+86 138-1234-5678`` → ``13812345678``."""
    folded = normalize_identifier(s)
    m = _PHONE_PREFIX.fullmatch(folded)
    return m.group(2) if m else folded


# --- Resident ID number (GB 11643-1999, ISO 7064 MOD 11-2) -------------------------

ID_WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
"""Weight of each of the first 17 digits (2**(18-i) mod 11)."""

ID_CHECK_CHARS = "10X98765432"
"""Check character indexed by ``weighted_sum % 11``."""

_DIGITS17 = re.compile(r"[0-9]{17}")


def id_number_check_char(first17: str) -> str:
    """The 18th character of a resident ID number whose first 17 digits are ``first17``."""
    if not _DIGITS17.fullmatch(first17):
        raise ValueError(f"expected 17 ASCII digits, got {first17!r}")
    total = sum(int(ch) * w for ch, w in zip(first17, ID_WEIGHTS, strict=True))
    return ID_CHECK_CHARS[total % 11]


MIN_BIRTH_DATE = date(1870, 1, 1)
"""The earliest birth date accepted.  18-character numbers exist since 1999 (GB 11643-1999);
nobody alive then was born before the 1870s, so an earlier date is a typing error."""


def birth_date(s: str) -> date | None:
    """The birth date of positions 7–14 of a (normalised) ID number, if it is a real day."""
    part = s[6:14]
    if len(part) != 8 or not part.isascii() or not part.isdigit():
        return None
    try:
        return date(int(part[:4]), int(part[4:6]), int(part[6:8]))
    except ValueError:
        return None


def is_valid_id_number(s: str, *, today: date) -> bool:
    """True for an ID number that, once normalised, has 18 characters, a known GB/T 2260
    region prefix (current or retired: a number keeps its first issuer's code), a real
    birth date between :data:`MIN_BIRTH_DATE` and ``today`` (the Beijing date the caller
    validates on — passed in, so the answer never depends on the machine's day or zone)
    and the right check character (``X`` or ``x`` for 10)."""
    n = normalize_identifier(s)
    if len(n) != 18 or not _DIGITS17.fullmatch(n[:17]):
        return False
    born = birth_date(n)
    if born is None or not MIN_BIRTH_DATE <= born <= today:
        return False
    if not id_prefix_known(n[:6]):
        return False
    return n[17] == id_number_check_char(n[:17])


# --- Unified social credit code (GB 32100-2015) --------------------------------------

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 code characters (no I, O, S, V, Z); a character's value is its index."""

USCC_WEIGHTS: tuple[int, ...] = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
"""Weight of each of the first 17 characters (3**i mod 31)."""

_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_CHARSET)}


def uscc_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code whose first 17 are ``first17``."""
    if len(first17) != 17 or any(ch not in _USCC_VALUE for ch in first17):
        raise ValueError(f"expected 17 characters of {USCC_CHARSET}, got {first17!r}")
    total = sum(_USCC_VALUE[ch] * w for ch, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_CHARSET[(31 - total % 31) % 31]


def is_valid_uscc(s: str) -> bool:
    """True for a credit code that, once normalised, has 18 code characters, a digit region
    part and the right check character.

    Positions 3–8 must be six digits (the registering authority's GB/T 2260 code, or
    ``100000`` for national registrations); whether that division exists is left to
    ``catalog.domain.regions``.
    """
    s = normalize_identifier(s)
    if len(s) != 18 or any(ch not in _USCC_VALUE for ch in s):
        return False
    if not s[2:8].isascii() or not s[2:8].isdigit():
        return False
    return s[17] == uscc_check_char(s[:17])


# --- Mobile numbers ------------------------------------------------------------------

MOBILE_RE = "1[3-9][0-9]{9}"
_MOBILE = re.compile(MOBILE_RE)


def is_valid_mobile(s: str) -> bool:
    """True for an 11-digit mainland mobile number (``1[3-9]`` then 9 digits) once
    normalised (:func:`normalize_phone`: ``+86 138-1234-5678`` passes)."""
    return _MOBILE.fullmatch(normalize_phone(s)) is not None


# --- Masks (PIPL) --------------------------------------------------------------------
#
# A mask keeps a head and a tail of the value and stars the rest, but only while at least
# as many characters stay hidden as on a well-formed value of the kind; anything shorter
# or odder is starred whole.  Otherwise an 8-character "phone" would keep 7 of its 8
# characters, a 1-character name would be shown whole.

PHONE_KEEP = (3, 4, 4)
"""Phone: first 3 and last 4 stay, and at least 4 (as in ``138****5678``) are hidden."""
ID_NUMBER_KEEP = (6, 4, 8)
"""ID number: first 6 and last 4 stay, at least 8 (the birth date) hidden."""


def _mask_middle(s: str, keep_head: int, keep_tail: int, min_hidden: int = 1) -> str:
    """Keep head and tail, star the rest; a value that would show more than the rule
    allows (fewer than ``min_hidden`` characters hidden) is starred whole."""
    if len(s) - keep_head - keep_tail < max(min_hidden, 1):
        return "*" * len(s)
    return s[:keep_head] + "*" * (len(s) - keep_head - keep_tail) + s[len(s) - keep_tail :]


def mask_phone(s: str) -> str:
    """``+86 138 1234 5678`` → ``138****5678``: normalised, then first 3 and last 4 stay;
    a value shorter than 11 characters is starred whole."""
    return _mask_middle(normalize_phone(s), *PHONE_KEEP)


def mask_id_number(s: str) -> str:
    """``520102199001011234`` → ``520102********1234``: normalised, then the region prefix
    and the last 4 stay; a value shorter than 18 characters is starred whole."""
    return _mask_middle(normalize_identifier(s), *ID_NUMBER_KEEP)


def mask_name(s: str) -> str:
    """``张三丰`` → ``张**``: the first character (the surname, mostly) stays — unless it is
    the only one: ``王`` → ``*``."""
    if len(s) < 2:
        return "*" * len(s)
    return s[:1] + "*" * (len(s) - 1)
