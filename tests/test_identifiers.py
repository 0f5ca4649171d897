"""Check characters, normalisation, validators and masks of catalog.domain.identifiers against
known examples (generated values, and the SQL side, in tests/test_identifier_sql.py)."""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from catalog.domain.identifiers import (
    USCC_CHARSET,
    id_number_check_char,
    is_valid_mobile,
    is_valid_uscc,
    mask_id_number,
    mask_name,
    mask_phone,
    normalize_identifier,
    normalize_phone,
    uscc_check_char,
)
from catalog.domain.identifiers import is_valid_id_number as _id_ok

TODAY = date(2026, 3, 4)  # the Beijing date IDs are validated on: injected, never the machine's


def is_valid_id_number(s: str, today: date = TODAY) -> bool:
    return _id_ok(s, today=today)


def with_check(first17: str) -> str:
    return first17 + id_number_check_char(first17)


# --- resident ID numbers ---------------------------------------------------------------


def test_id_known_valid_example() -> None:
    assert id_number_check_char("11010519491231002") == "X"
    assert is_valid_id_number("11010519491231002X")


@pytest.mark.parametrize(
    ("first17", "check"),
    [
        ("44052418800101001", "4"),  # the example printed in GB 11643-1999
        # by hand: 5·7+2·9+0·10+1·5+0·8+2·4+1·2+9·1+9·6+0·3+0·7+1·9+0·10+1·5+1·8+2·4+3·2
        # = 167, 167 mod 11 = 2 → "X"
        ("52010219900101123", "X"),
    ],
)
def test_id_check_char_examples(first17: str, check: str) -> None:
    assert id_number_check_char(first17) == check
    assert is_valid_id_number(first17 + check)


def test_id_every_check_value_reachable() -> None:
    seen = {id_number_check_char(f"5201021990010100{d}") for d in range(10)}
    seen |= {id_number_check_char(f"520102199001010{d}0") for d in range(10)}
    assert seen == set("10X98765432")


@pytest.mark.parametrize(
    "value",
    [
        "110105194912310021",  # wrong check character
        "11010519490230002X",  # 30 February
        "110105194913310021",  # month 13
        "1101051949123100",  # too short
        "11010519491231002X1",  # too long
        "A1010519491231002X",
        "११०१०५१९४९१२३१००२X",  # Devanagari digits are digits to str.isdigit, not to us
        "",
    ],
)
def test_id_invalid(value: str) -> None:
    assert not is_valid_id_number(value)


@pytest.mark.parametrize(
    "value",
    [
        "11010519491231002x",  # lower-case x
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits and X
        "１１０１０５１９４９１２３１００２ｘ",
        "110105 19491231 002X",
        "110105-1949-1231-002X",
        "\u3000110105\u200b19491231002X\n",  # ideographic space, zero-width space, newline
    ],
)
def test_id_normalised_before_validation(value: str) -> None:
    assert normalize_identifier(value) == "11010519491231002X"
    assert is_valid_id_number(value)
    assert mask_id_number(value) == "110105********002X"


def test_id_birth_date_is_real_and_not_in_the_future() -> None:
    born_tomorrow = with_check("52010220260305001")
    assert not is_valid_id_number(born_tomorrow, today=date(2026, 3, 4))
    assert is_valid_id_number(born_tomorrow, today=date(2026, 3, 5))
    assert not is_valid_id_number(with_check("52010218691231001"))  # before 1870
    assert is_valid_id_number(with_check("52010218700101001"))
    assert not is_valid_id_number(with_check("52010200000101001"))  # year 0


def test_id_region_prefix_must_be_known_current_or_retired() -> None:
    assert not is_valid_id_number(with_check("99999919900101001"))  # no such division
    assert not is_valid_id_number(with_check("52019919900101001"))
    assert is_valid_id_number(with_check("52212119900101001"))  # 遵义县, retired 1997
    assert is_valid_id_number(with_check("11010319900101001"))  # 崇文区, merged 2010
    assert is_valid_id_number(with_check("52010119900101001"))  # 贵阳市 市辖区
    assert is_valid_id_number(with_check("52010219900101001"))  # 南明区, current


def test_id_leap_day_is_a_real_date() -> None:
    first17 = "52010220000229001"
    assert is_valid_id_number(first17 + id_number_check_char(first17))
    first17 = "52010219000301001"
    assert is_valid_id_number(first17 + id_number_check_char(first17))
    first17 = "52010219000229001"  # 1900 was not a leap year
    assert not is_valid_id_number(first17 + id_number_check_char(first17))


@pytest.mark.parametrize("bad", ["1101051949123100", "1101051949123100X", "११०१०५१९४९१२३१००२"])
def test_id_check_char_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        id_number_check_char(bad)


# --- unified social credit codes ---------------------------------------------------------


def test_uscc_standard_example() -> None:
    assert uscc_check_char("91350100M000100Y4") == "3"
    assert is_valid_uscc("91350100M000100Y43")


def test_uscc_check_wraps_31_to_zero() -> None:
    # Find a prefix whose weighted sum is a multiple of 31: its check must be "0", not "31".
    for tail in itertools.product(USCC_CHARSET, repeat=2):
        first17 = "915201020000000" + "".join(tail)
        check = uscc_check_char(first17)
        if check == "0":
            assert is_valid_uscc(first17 + "0")
            break
    else:
        pytest.fail("no prefix with check character 0 found")


def test_uscc_single_character_changes_are_caught() -> None:
    code = "91350100M000100Y43"
    for pos in range(18):
        for ch in USCC_CHARSET:
            if ch != code[pos]:
                mutated = code[:pos] + ch + code[pos + 1 :]
                assert not is_valid_uscc(mutated), mutated


@pytest.mark.parametrize(
    "value",
    [
        "91350100M000100Y4",  # too short
        "91350100M000100Y433",  # too long
        "91350100O000100Y43",  # O is not in the character set
        "9135A100M000100Y4" + "0",  # region code must be digits
        "",
    ],
)
def test_uscc_invalid(value: str) -> None:
    assert not is_valid_uscc(value)


@pytest.mark.parametrize(
    "value", ["91350100m000100y43", "９１３５０１００Ｍ０００１００Ｙ４３", "913501-00M000-100Y43"]
)
def test_uscc_normalised_before_validation(value: str) -> None:
    assert normalize_identifier(value) == "91350100M000100Y43"
    assert is_valid_uscc(value)


def test_uscc_region_letters_rejected_even_with_right_check() -> None:
    first17 = "9135A100M000100Y4"
    assert not is_valid_uscc(first17 + uscc_check_char(first17))


def test_uscc_check_char_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        uscc_check_char("91350100I000100Y4")
    with pytest.raises(ValueError):
        uscc_check_char("91350100M000100Y")


# --- mobile numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["13812345678", "19912345678", "15000000000", "16612345678"])
def test_mobile_valid(value: str) -> None:
    assert is_valid_mobile(value)


@pytest.mark.parametrize(
    "value",
    [
        "+8613812345678",
        "+86 138 1234 5678",
        "0086-138-1234-5678",
        "8613812345678",
        "138-1234-5678",
        "１３８１２３４５６７８",  # full-width digits
        "＋８６　１３８１２３４５６７８",  # full-width plus, ideographic space
        "13812345678\n",
    ],
)
def test_mobile_normalised_before_validation(value: str) -> None:
    assert normalize_phone(value) == "13812345678"
    assert is_valid_mobile(value)
    assert mask_phone(value) == "138****5678"


@pytest.mark.parametrize(
    "value",
    [
        "12812345678",  # second digit 2
        "10812345678",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "+8713812345678",  # another country
        "86138123456789",
        "+86 1381234567",
        "1381234567８9",
        "",
    ],
)
def test_mobile_invalid(value: str) -> None:
    assert not is_valid_mobile(value)


# --- masks -------------------------------------------------------------------------------


def test_masks_match_the_product_rules() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_id_number("520102199001011234") == "520102********1234"
    assert mask_id_number("11010519491231002X") == "110105********002X"
    assert mask_name("张三丰") == "张**"
    assert mask_name("李四") == "李*"
    assert mask_name("欧阳娜娜") == "欧***"


def test_masks_hide_short_and_unusual_values_entirely() -> None:
    assert mask_phone("1381234") == "*******"
    assert mask_phone("13812345") == "********"  # 8 characters: not 7 of them shown
    assert mask_phone("1381234567") == "**********"
    assert mask_id_number("5201021234") == "**********"
    assert mask_id_number("520102199001011") == "*" * 15  # a 15-digit first-generation ID
    assert mask_phone("") == ""
    assert mask_name("") == ""
    assert mask_name("王") == "*"  # a 1-character name is not shown whole
    assert len(mask_phone("013812345678")) == 12
