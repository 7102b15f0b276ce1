"""Attachments fetched from their signed URLs, documents read and images checked: real bytes
from a local server, every failure a sentence for the user."""

from __future__ import annotations

import pytest
from support.agent_media import AttachmentServer, pdf, png

from agent.media import MediaError, MediaPreparer
from agent.media.documents import extract
from agent.media.fetch import fetch
from agent.media.images import dimensions, image_block


@pytest.fixture
def files():
    with AttachmentServer() as server:
        yield server


def _preparer(**overrides) -> MediaPreparer:
    values = {"transcriber": None, "max_bytes": 5 * 1024 * 1024, "document_chars": 40_000}
    values.update(overrides)
    return MediaPreparer(**values)


def test_fetch_returns_the_bytes_when_size_and_checksum_match(files):
    photo = png(64, 48)
    attachment = files.add(photo, kind="image", mime_type="image/png", name="photo.png")
    assert fetch(attachment, max_bytes=1024 * 1024) == photo


def test_a_file_over_the_agent_limit_is_refused_without_downloading(files):
    attachment = files.add(b"x" * 2048, kind="voice", mime_type="audio/ogg", name="voice.ogg",
                           size=30 * 1024 * 1024)
    with pytest.raises(MediaError) as info:
        fetch(attachment, max_bytes=20 * 1024 * 1024)
    assert str(info.value) == "voice.ogg is 30 MB; the limit is 20 MB, so I didn't open it."
    assert files.gets == []


def test_a_server_sending_more_than_announced_is_cut_off(files):
    attachment = files.add(b"y" * 10_000, kind="document", mime_type="text/plain", name="a.txt",
                           size=100)
    with pytest.raises(MediaError, match="larger than announced"):
        fetch(attachment, max_bytes=1024 * 1024)


def test_damaged_bytes_fail_the_checksum(files):
    attachment = files.add(b"hello", kind="document", mime_type="text/plain", name="notes.txt",
                           sha256="0" * 64)
    with pytest.raises(MediaError, match=r"notes\.txt arrived damaged"):
        fetch(attachment, max_bytes=1024)


def test_an_expired_url_and_a_stalled_download_are_sentences_not_crashes(files):
    gone = files.add(b"hello", kind="image", mime_type="image/png", name="")
    gone["url"] = gone["url"].replace("/media/", "/media/404")
    with pytest.raises(MediaError, match=r"couldn't download your photo \(the server answered 404"):
        fetch(gone, max_bytes=1024)
    files.stall = True
    slow = files.add(b"hello", kind="voice", mime_type="audio/ogg")
    try:
        with pytest.raises(MediaError, match="Downloading your voice note timed out"):
            fetch(slow, max_bytes=1024, timeout=0.3)
    finally:
        files.release.set()


def test_pdf_text_is_extracted_page_by_page():
    doc = pdf(["Invoice 2026-114", "Total due: 1,250 EUR by 15 December"])
    result = extract(doc, "application/pdf", "invoice.pdf", 40_000)
    assert result.pages == 2 and not result.truncated
    assert "Invoice 2026-114" in result.text and "Total due: 1,250 EUR" in result.text


def test_a_long_pdf_is_cut_at_the_cap_and_says_so():
    doc = pdf([f"Page {n}: " + "lorem ipsum " * 40 for n in range(1, 21)])
    result = extract(doc, "application/pdf", "manual.pdf", 2_000)
    assert result.truncated and len(result.text) <= 2_000 and result.pages == 20
    assert result.text.startswith("Page 1:")


def test_locked_and_scanned_pdfs_are_refused_clearly():
    with pytest.raises(MediaError, match="protected with a password"):
        extract(pdf(["secret plans"], password="hunter2"), "application/pdf", "plans.pdf", 1000)
    with pytest.raises(MediaError, match="looks like scanned pages"):
        extract(pdf(["", ""]), "application/pdf", "scan.pdf", 1000)
    with pytest.raises(MediaError, match="doesn't look like a valid PDF"):
        extract(b"%PDF-1.4\n garbage", "application/pdf", "broken.pdf", 1000)


def test_a_pdf_locked_only_against_printing_is_read():
    doc = pdf(["Owner password only"], password="owner", owner_only=True)
    assert extract(doc, "application/pdf", "locked.pdf", 1000).text == "Owner password only"


def test_text_files_are_decoded_by_charset_then_utf8_then_cp1252():
    assert extract("Grüße".encode("latin-1"), "text/plain; charset=iso-8859-1", "a.txt", 100).text == "Grüße"
    assert extract("naïve ✓".encode(), "application/octet-stream", "notes.md", 100).text == "naïve ✓"
    assert extract("café".encode("cp1252"), "text/csv", "b.csv", 100).text == "café"
    with pytest.raises(MediaError, match="doesn't look like a text file"):
        extract(b"\x00\x01binary", "text/plain", "c.txt", 100)
    with pytest.raises(MediaError, match="I read PDFs and text files"):
        extract(b"PK\x03\x04", "application/zip", "d.zip", 100)


def test_image_blocks_take_the_type_from_the_bytes_and_respect_api_limits():
    block = image_block(png(32, 32), "photo")
    assert block["source"]["media_type"] == "image/png" and block["source"]["type"] == "base64"
    assert dimensions(png(8001, 2), "image/png") == (8001, 2)
    with pytest.raises(MediaError, match="8001×2 pixels; I can look at images up to 8000×8000"):
        image_block(png(8001, 2), "panorama.png")
    with pytest.raises(MediaError, match="JPEG, PNG, GIF and WebP images only"):
        image_block(b"II*\x00 a TIFF", "scan.tiff")
    with pytest.raises(MediaError, match="too large for me to look at"):
        image_block(b"\x89PNG\r\n\x1a\n" + bytes(4 * 1024 * 1024), "huge.png")


def test_jpeg_dimensions_come_from_the_start_of_frame():
    # SOI, an APP0 segment, then SOF0 with height 480 and width 640.
    jpeg = (b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            + b"\xff\xc0\x00\x11\x08\x01\xe0\x02\x80\x03" + bytes(9))
    assert dimensions(jpeg, "image/jpeg") == (640, 480)


def test_control_plane_errors_become_plain_sentences_and_the_text_is_kept():
    message = _preparer().prepare("what do you think?", [
        {"kind": "voice", "file_id": "v", "name": "voice.ogg", "error": "too_large",
         "size": 30 * 1024 * 1024, "limit": 20 * 1024 * 1024},
        {"kind": "document", "file_id": "d", "name": "setup.exe", "error": "unsupported",
         "mime_type": "application/x-msdownload"},
        {"kind": "image", "file_id": "i", "name": "", "error": "unavailable"},
        {"kind": "image", "file_id": "old-style"},  # an older control plane: ignored
    ])
    assert message.shown == [
        "voice.ogg is 30 MB; the limit is 20 MB, so I didn't receive it.",
        "I can't open setup.exe: application/x-msdownload isn't a file type I accept.",
        "I couldn't get your photo from the chat app; please send it again.",
    ]
    assert message.needs_model and message.text.startswith("what do you think?")
    assert "voice.ogg" in message.text  # the model knows which file is missing


def test_documents_of_one_message_share_the_character_cap(files):
    first = files.add(b"A" * 300, kind="document", mime_type="text/plain", name="a.txt")
    second = files.add(b"B" * 300, kind="document", mime_type="text/plain", name="b.txt")
    message = _preparer(document_chars=400).prepare("", [first, second])
    assert message.documents[0].startswith('<document name="a.txt">\n' + "A" * 300)
    assert "B" * 100 in message.documents[1] and "B" * 101 not in message.documents[1]
    assert "the rest was cut off" in message.documents[1]
    assert message.summary == "[document: a.txt]\n[document: b.txt]"


def test_a_video_is_not_downloaded_and_the_user_is_told(files):
    video = files.add(b"\x00\x00\x00\x18ftypmp42", kind="video", mime_type="video/mp4",
                      name="clip.mp4")
    message = _preparer().prepare("", [video])
    assert message.shown == ["I can't watch videos yet, so I haven't seen clip.mp4."]
    assert not message.needs_model and files.gets == []
