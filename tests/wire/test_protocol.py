"""Event parsing refuses wrong JSON types (issue #19: a tenant VM writes its events, so every
field is checked before a consumer uses it)."""

from __future__ import annotations

import json

import pytest

from wire.errors import MalformedMessage
from wire.protocol import Event

GOOD = {"v": 1, "type": "event", "message_id": "m1", "seq": 1, "kind": "final", "text": "hi",
        "tenant": "7", "channel": "telegram", "chat_id": "42",
        "usage": {"model": "m", "input_tokens": 1, "output_tokens": 2, "cost_cents": 0.5,
                  "latency_ms": 3, "calls": [{"model": "m", "input_tokens": 1}]}}


def test_a_well_typed_event_parses():
    assert Event.from_json(json.dumps(GOOD)).usage["output_tokens"] == 2


@pytest.mark.parametrize(("field", "value", "message"), [
    ("text", 1, "'text' must be a string"),
    ("tenant", 7, "'tenant' must be a string"),
    ("chat_id", None, "'chat_id' must be a string"),
    ("seq", "1", "'seq' must be an integer"),
    ("seq", True, "'seq' must be an integer"),
    ("seq", -1, "'seq' must be >= 0"),
    ("message_id", ["a"], "'message_id' must be a string"),
    ("channel", "fax", "unknown channel"),
    ("usage", "lots", "'usage' must be an object or null"),
    ("usage", {"input_tokens": "9"}, "'input_tokens' must be a non-negative number"),
    ("usage", {"cost_cents": -1}, "'cost_cents' must be a non-negative number"),
    ("usage", {"model": 5}, "'model' must be a string"),
    ("usage", {"calls": {"model": "m"}}, "'calls' must be a list"),
    ("usage", {"calls": [1]}, "calls must be objects"),
    ("at", "now", "'at' must be an integer or a number or null"),
])
def test_a_field_of_the_wrong_type_is_a_protocol_error(field, value, message):
    with pytest.raises(MalformedMessage, match=message.replace("(", r"\(")):
        Event.from_json(json.dumps({**GOOD, field: value}))
