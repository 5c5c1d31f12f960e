"""Validation of a send request: the producer API's checks, with hypothesis for hostile input."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import InvalidPayload
from worker.sending.request import MAX_MOBILE_INPUT, MAX_TTL, normalise_code, normalise_mobile, validate

ACCOUNTS = {"default", "spare"}


def check(mobile, code="4821", account=None, request_id=None, ttl=None):
    return validate(mobile, code, account, request_id, ttl, accounts=ACCOUNTS, default_ttl=300)


@pytest.mark.parametrize("raw", ["13800138000", "+8613800138000", "86 138 0013 8000", "+86 138-0013-8000", " 13800138000 "])
def test_mobile_prefixes_and_spaces_are_normalised(raw):
    assert normalise_mobile(raw) == "13800138000"


@pytest.mark.parametrize("raw", ["12800138000", "1380013800", "138001380000", "23800138000", "1380013800a", "", "+1 13800138000"])
def test_bad_mobiles_name_the_field(raw):
    with pytest.raises(InvalidPayload) as info:
        check(raw)
    assert info.value.field == "mobile" and isinstance(info.value, ValueError)


ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in "001380000")
FULL_WIDTH = "".join(chr(0xFF10 + int(d)) for d in "800138000")


@pytest.mark.parametrize("raw", [
    "13" + ARABIC_INDIC,  # \d matched these, and they were sent
    "13" + FULL_WIDTH,
    "138" + "\u0968" * 8,  # Devanagari
    "138\u00a00013\u30008000",  # no-break and ideographic spaces are not what a person types between digits
])
def test_only_ascii_digits_make_a_mobile(raw):
    with pytest.raises(InvalidPayload) as info:
        check(raw)
    assert info.value.field == "mobile"


def test_a_mobile_longer_than_its_limit_is_refused_not_cut():
    cut_to_a_valid_number = "13800138000" + " " * (MAX_MOBILE_INPUT - 11) + "5"
    assert len(cut_to_a_valid_number) == MAX_MOBILE_INPUT + 1
    assert normalise_mobile(cut_to_a_valid_number[:MAX_MOBILE_INPUT]) == "13800138000"
    with pytest.raises(InvalidPayload) as info:
        normalise_mobile(cut_to_a_valid_number)
    assert info.value.field == "mobile" and str(MAX_MOBILE_INPUT) in str(info.value)


@pytest.mark.parametrize("code", ["123", "1234567", "12a4", "１２３４", "", 1234, None])
def test_bad_codes_name_the_field(code):
    with pytest.raises(InvalidPayload) as info:
        check("13800138000", code)
    assert info.value.field == "code"


@pytest.mark.parametrize("mobile, code", [
    (" 13800138000 ", " 4821 "),  # what a web form sends when the person typed a space
    ("\t13800138000\r\n", "4821\n"),
    ("13800138000\x0b", "\x0c\r\t 4821 \t"),
])
def test_ascii_space_around_a_mobile_or_a_code_is_dropped(mobile, code):
    req = check(mobile, code)
    assert (req.mobile, req.code) == ("13800138000", "4821")


@pytest.mark.parametrize("code", [
    "48 21", "48\t21", "4-821",  # inside a code nothing but digits
    "\u00a04821", "4821\u3000", "\u20034821",  # no-break, ideographic, em spaces are not ASCII white space
    " ", "\t\n",
])
def test_only_ascii_space_around_a_code_is_dropped(code):
    with pytest.raises(InvalidPayload) as info:
        check("13800138000", code)
    assert info.value.field == "code"


def test_normalise_code_leaves_what_is_not_a_string_for_the_check():
    assert normalise_code(" 123456\n") == "123456"
    assert normalise_code(1234) == 1234 and normalise_code(None) is None


def test_check_verification_reads_a_code_with_space_around_it():
    from tasks.verification import Verifications
    from worker.stores.verifications import CheckResult

    class Store:
        def check(self, mobile, code):
            if not isinstance(code, str) or not code.isdigit():
                raise ValueError("code")
            checked.append((mobile, code))
            return CheckResult("approved")

    checked: list[tuple[str, str]] = []
    producer = type("Producer", (), {"state": None, "keep_seconds": 60})()
    verifications = Verifications(producer, Store())
    assert verifications.check(" 13800138000\t", "\t482159 \r\n").status == "approved"
    assert checked == [("13800138000", "482159")]
    for code in ("4821 59", "\u00a0482159", 482159):
        with pytest.raises(InvalidPayload) as info:
            verifications.check("13800138000", code)
        assert info.value.field == "code"
    assert len(checked) == 1  # a refused code reaches no check: it costs no attempt


def test_account_request_id_and_ttl_are_checked():
    assert check("13800138000", account="spare").account == "spare"
    for kwargs, field in [({"account": "nope"}, "account"), ({"request_id": "x" * 129}, "request_id"),
                          ({"request_id": "has space"}, "request_id"), ({"ttl": -5}, "ttl"), ({"ttl": 0}, "ttl"),
                          ({"ttl": MAX_TTL + 1}, "ttl"), ({"ttl": "60"}, "ttl"), ({"ttl": True}, "ttl")]:
        with pytest.raises(InvalidPayload) as info:
            check("13800138000", **kwargs)
        assert info.value.field == field


def test_defaults_and_repr_hide_the_secrets():
    req = check("13800138000", "4821")
    assert (req.account, req.ttl, req.request_id) == ("default", 300, "")
    assert "4821" not in repr(req) and "13800138000" not in repr(req) and "138****8000" in repr(req)


anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50),
                     st.binary(max_size=50), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@given(mobile=anything, code=anything, account=anything, request_id=anything, ttl=anything)
def test_any_input_is_accepted_or_refused_with_a_named_field(mobile, code, account, request_id, ttl):
    try:
        req = check(mobile, code, account, request_id, ttl)
    except InvalidPayload as exc:
        assert exc.field in {"mobile", "code", "account", "request_id", "ttl"}
        assert str(exc).startswith(exc.field + ": ")
    else:
        assert len(req.mobile) == 11 and req.code.isdigit() and req.account in ACCOUNTS


@pytest.mark.parametrize("filler", ["1", "a", "\udcff", " "])
def test_megabyte_strings_are_refused(filler):
    huge = filler * 1_000_000
    for args in [(huge, "4821"), ("13800138000", huge), ("13800138000", "4821", huge), ("13800138000", "4821", None, huge)]:
        with pytest.raises(InvalidPayload) as info:
            check(*args)
        assert len(str(info.value)) < 300  # bounded, whatever came in
