"""The one log pipeline (``wire.logs``): both logging APIs, one format, the bound ids."""

from __future__ import annotations

import json
import logging
import os

import pytest
import structlog

from wire import logs
from wire.protocol import Envelope


@pytest.fixture
def pipeline():
    """Configure in this process, then put logging and structlog back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    httpx_level = logging.getLogger("httpx").level
    tqdm_env = os.environ.get("TQDM_DISABLE")
    yield logs.configure
    if tqdm_env is None:
        os.environ.pop("TQDM_DISABLE", None)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_stdlib_and_structlog_lines_come_out_as_json_with_the_bound_ids(pipeline, capsys):
    pipeline("json")
    envelope = Envelope(id="env1", tenant="7", channel="telegram", chat_id="1", sender_id="2",
                        text="hi", request_id="req1")
    with logs.bound(**logs.envelope_ids(envelope)):
        logging.getLogger("agent.turn").info("turn for %s", "chat 1")
        structlog.get_logger("control.delivery").info("delivered", chat="1")
    logging.getLogger("agent.turn").info("between messages")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["turn for chat 1", "delivered", "between messages"]
    for line in lines[:2]:
        assert (line["request_id"], line["tenant"], line["envelope_id"]) == ("req1", "7", "env1")
    assert lines[1]["chat"] == "1" and lines[1]["logger"] == "control.delivery"
    assert not {"request_id", "tenant", "envelope_id"} & set(lines[2])


def test_a_cron_envelope_binds_no_empty_request_id_and_blocks_nest(pipeline, capsys):
    pipeline("json")
    with logs.bound(request_id="outer"):
        with logs.bound(request_id=None, envelope_id="cron1"):
            logging.getLogger("agent").info("inner")
        logging.getLogger("agent").info("outer again")
    inner, outer = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert (inner["request_id"], inner["envelope_id"]) == ("outer", "cron1")
    assert outer["request_id"] == "outer" and "envelope_id" not in outer


def test_configuring_twice_logs_each_line_once_in_the_latest_format(pipeline, capsys):
    logging.basicConfig(level=logging.INFO)
    pipeline("json")
    pipeline("console")
    logging.getLogger("control").warning("only once")
    err = capsys.readouterr().err
    assert err.count("only once") == 1 and not err.lstrip().startswith("{")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="HERMES_LOG_FORMAT must be one of console, json"):
        logs.format_from_env({"HERMES_LOG_FORMAT": "xml"})
    assert logs.format_from_env({}) == "console"


def test_the_request_id_crosses_the_wire_and_an_envelope_without_one_still_parses():
    sent = Envelope(id="e1", tenant="7", channel="telegram", chat_id="1", sender_id="2", text="hi",
                    request_id="req1")
    assert Envelope.from_json(sent.to_json()).request_id == "req1"
    older = json.loads(sent.to_json())
    del older["request_id"]  # written by a control plane from before the field
    assert Envelope.from_json(json.dumps(older)).request_id is None
