"""The WhatsApp adapter against the Graph API stand-in: text sent with WhatsApp formatting and
counted only with a wamid, Graph errors mapped to what the delivery worker does, the template
outside the 24-hour window, media downloads capped, and the Markdown conversion."""

from __future__ import annotations

import pytest

from control.channels.base import ChannelError, MediaTooLarge
from control.channels.whatsapp import MAX_TEXT, Template, WhatsAppAdapter
from control.channels.whatsapp_format import to_whatsapp
from standins.whatsapp_api import WhatsAppApiStandin

WA_ID = "972987654321"


@pytest.fixture
def api():
    with WhatsAppApiStandin() as standin:
        yield standin


def adapter_for(api, open_window=True, template=None, token=None) -> WhatsAppAdapter:
    return WhatsAppAdapter(token or api.access_token, api.phone_number_id,
                           lambda wa_id: open_window, api.base_url, template)


def test_send_posts_a_whatsapp_formatted_text_and_returns_the_wamid(api):
    wamid = adapter_for(api).send(WA_ID, "## Plan\n**Tomorrow** at 9, see [the map](https://m.example)")
    [sent] = api.sent
    assert wamid == sent.wamid and wamid.startswith("wamid.")
    assert (sent.to, sent.type) == (WA_ID, "text")
    assert sent.text == "*Plan*\n*Tomorrow* at 9, see the map (https://m.example)"
    body = api.requests[0]["json"]
    assert body["messaging_product"] == "whatsapp" and body["text"]["preview_url"] is False


def test_whatsapp_cannot_edit_so_the_adapter_says_final_text_only(api):
    adapter = adapter_for(api)
    assert adapter.limits.can_edit is False and adapter.limits.max_text == MAX_TEXT == 4096
    with pytest.raises(ChannelError) as caught:
        adapter.edit(WA_ID, "wamid.x", "new")
    assert caught.value.permanent


@pytest.mark.parametrize(("code", "wait"), [(130429, 1.0), (131056, 6.0), (80007, 60.0)])
def test_rate_limit_codes_become_retry_after(api, code, wait):
    api.fail_next(code)
    with pytest.raises(ChannelError) as caught:
        adapter_for(api).send(WA_ID, "hi")
    assert caught.value.rate_limited and caught.value.retry_after == wait
    assert api.sent == []


def test_http_429_is_a_rate_limit_too(api):
    api.fail_next(130429, status=429)
    with pytest.raises(ChannelError) as caught:
        adapter_for(api).send(WA_ID, "hi")
    assert caught.value.rate_limited


@pytest.mark.parametrize("code", [131047, 131026, 132001])
def test_refusals_are_permanent(api, code):
    api.fail_next(code)
    with pytest.raises(ChannelError) as caught:
        adapter_for(api).send(WA_ID, "hi")
    assert caught.value.permanent and caught.value.answered and str(code) in str(caught.value)


def test_a_bad_token_is_permanent(api):
    with pytest.raises(ChannelError) as caught:
        adapter_for(api, token="EAAG-revoked").send(WA_ID, "hi")
    assert caught.value.permanent and caught.value.status == 401


def test_server_errors_and_an_unreachable_api_are_transient(api):
    api.fail_next(1, status=500)
    with pytest.raises(ChannelError) as caught:
        adapter_for(api).send(WA_ID, "hi")
    assert caught.value.transient and caught.value.answered
    gone = WhatsAppAdapter("t", "1", lambda _: True, "http://127.0.0.1:9/v23.0", timeout=1)
    with pytest.raises(ChannelError) as caught:
        gone.send(WA_ID, "hi")
    assert caught.value.status == 0 and caught.value.transient


def test_outside_the_window_the_template_carries_the_text(api):
    adapter = adapter_for(api, open_window=False, template=Template.parse("daily_update:en_US"))
    adapter.send(WA_ID, "Your report:\n- **3** new mails\n\tand    more")
    [sent] = api.sent
    assert (sent.type, sent.template) == ("template", "daily_update")
    template = api.requests[0]["json"]["template"]
    assert template["language"] == {"code": "en_US"}
    # Template parameters may hold no new lines, tabs or 4+ spaces (error 132018).
    assert sent.text == "Your report: - *3* new mails and more"


def test_outside_the_window_without_a_template_nothing_is_sent_and_the_reason_is_clear(api):
    with pytest.raises(ChannelError) as caught:
        adapter_for(api, open_window=False).send(WA_ID, "cron output")
    assert caught.value.permanent and "24-hour" in str(caught.value)
    assert api.sent == []


def test_template_setting_must_be_name_and_language():
    assert Template.parse("") is None
    with pytest.raises(ValueError, match="name:language_code"):
        Template.parse("just_a_name")


def test_fetch_media_downloads_the_file_with_its_type_and_name(api):
    api.add_media("m1", b"%PDF-1.7 tiny", "application/pdf")
    media = adapter_for(api).fetch_media({"kind": "document", "file_id": "m1",
                                          "name": "report.pdf"}, max_bytes=1000)
    assert (media.content, media.mime_type, media.name) == (b"%PDF-1.7 tiny", "application/pdf",
                                                            "report.pdf")


def test_fetch_media_refuses_a_file_announced_larger_than_the_limit(api):
    api.add_media("big", b"x" * 5000, "image/jpeg")
    with pytest.raises(MediaTooLarge) as caught:
        adapter_for(api).fetch_media({"kind": "image", "file_id": "big"}, max_bytes=4999)
    assert (caught.value.size, caught.value.limit) == (5000, 4999)


def test_fetch_media_stops_a_download_that_grows_past_the_limit(api, monkeypatch):
    api.add_media("liar", b"y" * 70_000, "audio/ogg")
    original = api._media_info

    def understated(media_id):  # a file_size that lies: the stream itself must be capped
        status, info = original(media_id)
        return status, {**info, "file_size": 10}

    monkeypatch.setattr(api, "_media_info", understated)
    with pytest.raises(MediaTooLarge):
        adapter_for(api).fetch_media({"kind": "voice", "file_id": "liar"}, max_bytes=65_536)


def test_fetch_media_of_an_unknown_id_is_a_permanent_channel_error(api):
    with pytest.raises(ChannelError) as caught:
        adapter_for(api).fetch_media({"kind": "image", "file_id": "nope"}, max_bytes=10)
    assert caught.value.permanent and not isinstance(caught.value, MediaTooLarge)


@pytest.mark.parametrize(("markdown", "whatsapp"), [
    ("**bold** __also__", "*bold* *also*"),
    ("*italic* and ~~gone~~", "_italic_ and ~gone~"),
    ("# Heading\ntext", "*Heading*\ntext"),
    ("| name | qty |\n|---|---:|\n| tea | 2 |", "name · qty\ntea · 2"),
    ("[https://x.io](https://x.io)", "https://x.io"),
    ("`**kept**`", "`**kept**`"),
    ("```python\nx = **1**\n```", "```x = **1**```"),
    ("plain text, no markdown", "plain text, no markdown"),
])
def test_markdown_becomes_whatsapp_formatting(markdown, whatsapp):
    assert to_whatsapp(markdown) == whatsapp
