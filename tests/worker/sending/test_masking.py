"""Masking: what Flower, logs and results show of a mobile number and a code."""
from __future__ import annotations

from worker.sending.masking import mask_digit_runs, mask_mobile, masked_call


def test_mobile_keeps_prefix_and_last_four():
    assert mask_mobile("13800138000") == "138****8000"
    assert mask_mobile("123") == "****"


def test_call_reprs_hide_mobile_and_code_whatever_the_shape():
    args, kwargs = masked_call(("13800138000", "4821"), {"account": "default", "request_id": "r-1", "ttl": 60})
    assert args == "('138****8000', '****')"
    assert kwargs == "{'account': 'default', 'request_id': 'r-1', 'ttl': '60'}"
    args, kwargs = masked_call([], {"mobile": "13800138000", "code": "4821", "extra": "x" * 10_000})
    assert "13800138000" not in args + kwargs and "4821" not in kwargs and len(kwargs) < 200
    assert masked_call("garbage", None) == ("()", "{}")


def test_a_keyword_the_task_does_not_take_is_shown_by_position_not_by_name():
    _, kwargs = masked_call(["13800138000", "4821"], {"13900139000": "x", "ttl": 60})
    assert "13900139000" not in kwargs
    assert kwargs == "{'<keyword 1>': '<str>', 'ttl': '60'}"


def test_digit_runs_that_could_hold_a_number_are_masked_in_identifiers():
    assert mask_digit_runs("login:13900139000") == "login:139****9000"
    assert mask_digit_runs("order-1234567:x") == "order-****:x"
    assert mask_digit_runs("order-91") == "order-91"  # too short to hold a number
    uuid = "12345678-1234-1234-1234-123456789012"  # Celery's own task ids are shown whole
    assert mask_digit_runs(uuid) == uuid


def test_a_request_id_shown_in_flower_has_its_digit_runs_masked():
    _, kwargs = masked_call(("13800138000", "4821"), {"request_id": "login:13900139000"})
    assert kwargs == "{'request_id': 'login:139****9000'}"


def test_a_requester_is_shown_only_by_its_type():
    _, kwargs = masked_call(("13800138000", "4821"), {"requester": "203.0.113.7"})
    assert kwargs == "{'requester': '<str>'}"
