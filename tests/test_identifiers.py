"""Check characters, validators and masks of catalog.identifiers against known examples."""

from __future__ import annotations

import itertools

import pytest

from catalog.identifiers import (
    USCC_CHARSET,
    id_number_check_char,
    is_valid_id_number,
    is_valid_mobile,
    is_valid_uscc,
    mask_id_number,
    mask_name,
    mask_phone,
    uscc_check_char,
)

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
        "11010519491231002x",  # lower-case x is not the canonical form
        "110105194912310021",  # wrong check character
        "11010519490230002X",  # 30 February
        "110105194913310021",  # month 13
        "1101051949123100",  # too short
        "11010519491231002X1",  # too long
        "A1010519491231002X",
        "１１０１０５１９４９１２３１００２X",  # full-width digits
        "",
    ],
)
def test_id_invalid(value: str) -> None:
    assert not is_valid_id_number(value)


def test_id_leap_day_is_a_real_date() -> None:
    first17 = "52010220000229001"
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
        "91350100m000100y43",  # lower case
        "91350100O000100Y43",  # O is not in the character set
        "9135A100M000100Y4" + "0",  # region code must be digits
        "",
    ],
)
def test_uscc_invalid(value: str) -> None:
    assert not is_valid_uscc(value)


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
        "12812345678",  # second digit 2
        "10812345678",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "+8613812345678",
        "138-1234-5678",
        "１３８１２３４５６７８",  # full-width digits
        "13812345678\n",
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


def test_masks_keep_length_and_hide_short_values_entirely() -> None:
    assert mask_phone("1381234") == "*******"
    assert mask_id_number("5201021234") == "**********"
    assert mask_phone("") == ""
    assert mask_name("") == ""
    assert mask_name("王") == "王"
    assert len(mask_phone("013812345678")) == 12
