"""Check characters, validators and PIPL masks for the identifiers agencies exchange.

Quality gates and the exchange layer need the same answers for "is this a real ID /
credit code / mobile number" and "what does a consumer see instead"; keeping the rules in
one set of pure functions (no I/O, no region lookups) lets both the Python side and the
tests agree, and the DuckDB SQL masks are written to match these.

Validators answer ``False`` for anything malformed instead of raising, because they are
used as row predicates over dirty data; the check-character functions raise
``ValueError`` because a caller computing a check character is building a code and
handing them garbage is a bug.
"""

from __future__ import annotations

import re
from datetime import date

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


def _is_real_date(yyyymmdd: str) -> bool:
    try:
        date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return False
    return True


def is_valid_id_number(s: str) -> bool:
    """True for an 18-character ID with a real birth date and the right check character.

    Only the canonical form passes (upper-case ``X``); normalise input first if lower-case
    ``x`` is to be accepted.  The region prefix is not looked up here (see
    ``catalog.regions``) because codes of abolished divisions stay valid on old IDs.
    """
    if len(s) != 18 or not _DIGITS17.fullmatch(s[:17]):
        return False
    if not _is_real_date(s[6:14]):
        return False
    return s[17] == id_number_check_char(s[:17])


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
    """True for an 18-character credit code with a digit region code and the right check.

    Positions 3–8 must be six digits (the registering authority's GB/T 2260 code); whether
    that division exists is left to ``catalog.regions``.
    """
    if len(s) != 18 or any(ch not in _USCC_VALUE for ch in s):
        return False
    if not s[2:8].isascii() or not s[2:8].isdigit():
        return False
    return s[17] == uscc_check_char(s[:17])


# --- Mobile numbers ------------------------------------------------------------------

_MOBILE = re.compile(r"1[3-9][0-9]{9}")


def is_valid_mobile(s: str) -> bool:
    """True for an 11-digit mainland mobile number (``1[3-9]`` then 9 digits, no prefix)."""
    return _MOBILE.fullmatch(s) is not None


# --- Masks (PIPL) --------------------------------------------------------------------


def _mask_middle(s: str, keep_head: int, keep_tail: int) -> str:
    """Keep head and tail, star the rest; too-short values are starred whole."""
    if len(s) <= keep_head + keep_tail:
        return "*" * len(s)
    return s[:keep_head] + "*" * (len(s) - keep_head - keep_tail) + s[-keep_tail:]


def mask_phone(s: str) -> str:
    """``13812345678`` → ``138****5678``: first 3 and last 4 stay, one ``*`` per hidden char."""
    return _mask_middle(s, 3, 4)


def mask_id_number(s: str) -> str:
    """``520102199001011234`` → ``520102********1234``: region prefix and last 4 stay."""
    return _mask_middle(s, 6, 4)


def mask_name(s: str) -> str:
    """``张三丰`` → ``张**``: the first character (the surname, mostly) stays."""
    return s[:1] + "*" * (len(s) - 1)
