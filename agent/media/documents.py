"""Text out of documents: PDF (pypdf) and text files, capped in characters.

A PDF's text layer is read page by page until the cap is reached, so a 500-page manual costs
no more than the pages that fit.  A PDF locked with a password we do not have, or one that is
only scanned images (no text layer), is refused with a sentence saying so.  Text files are
decoded with the charset their MIME type names, else UTF-8 (with or without BOM), else
Windows-1252, which decodes any byte.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass

from agent.media.errors import MediaError

log = logging.getLogger(__name__)

PDF_TYPES = frozenset({"application/pdf", "application/x-pdf"})
# Pages read at most: a huge PDF with little text per page would otherwise hold the turn for
# minutes before the character cap stops it (pypdf parses ~100-300 pages a second here).
MAX_PAGES = 500
# Non-``text/*`` types that are text, and file extensions that are text when the sender's app
# labelled the file ``application/octet-stream``.
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/x-yaml",
                        "application/yaml", "application/toml", "application/csv",
                        "application/javascript", "application/x-sh", "application/sql",
                        "application/x-ndjson", "application/ld+json"})
TEXT_EXTENSIONS = frozenset({".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".xml", ".yaml",
                             ".yml", ".toml", ".ini", ".log", ".py", ".js", ".ts", ".html", ".htm",
                             ".css", ".sql", ".sh", ".rst", ".tex", ".srt", ".vtt"})


@dataclass(frozen=True)
class DocumentText:
    """Text taken from one document.

    Attributes:
        text: at most the requested number of characters.
        pages: the PDF's page count, or None for text files.
        truncated: True when the document had more text than ``text`` holds.
    """

    text: str
    pages: int | None = None
    truncated: bool = False


def _bare(mime_type: str) -> str:
    return (mime_type or "").split(";")[0].strip().lower()


def is_pdf(mime_type: str, name: str) -> bool:
    """Return True when the file is a PDF by MIME type or, failing one, by extension."""
    return _bare(mime_type) in PDF_TYPES or (name or "").lower().endswith(".pdf")


def is_text(mime_type: str, name: str) -> bool:
    """Return True when the file is plain text by MIME type or, when generic, by extension."""
    bare = _bare(mime_type)
    if bare.startswith("text/") or bare in TEXT_TYPES:
        return True
    return bare in ("", "application/octet-stream") and \
        os.path.splitext(name or "")[1].lower() in TEXT_EXTENSIONS


def extract(data: bytes, mime_type: str, name: str, max_chars: int) -> DocumentText:
    """Return the text of a PDF or text file, at most ``max_chars`` characters.

    Raises:
        MediaError: not a PDF or text file, an unreadable or locked PDF, a PDF with no text
            layer, or a "text" file that is binary.
    """
    if is_pdf(mime_type, name):
        return pdf_text(data, name, max_chars)
    if is_text(mime_type, name):
        return plain_text(data, mime_type, name, max_chars)
    raise MediaError(f"I can't read {name} ({_bare(mime_type) or 'unknown type'}): I read PDFs "
                     "and text files.")


def pdf_text(data: bytes, name: str, max_chars: int) -> DocumentText:
    """Return the text layer of a PDF, pages separated by blank lines.

    A PDF encrypted with an empty user password (common: it only restricts printing or
    copying) is opened; any other password is refused.

    Raises:
        MediaError: see ``extract``.
    """
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise MediaError(f"{name} is protected with a password, so I can't read it. Send a "
                             "copy without the password if you'd like me to.")
        parts, used, truncated = [], 0, len(reader.pages) > MAX_PAGES
        for page in reader.pages[:MAX_PAGES]:
            text = (page.extract_text() or "").strip()
            if not text:
                continue
            if used + len(text) > max_chars:
                parts.append(text[: max(0, max_chars - used)])
                truncated = True
                break
            parts.append(text)
            used += len(text) + 2
        pages = len(reader.pages)
    except (FileNotDecryptedError, DependencyError) as exc:
        raise MediaError(f"{name} is protected with a password, so I can't read it.") from exc
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:  # pypdf's malformed-file errors
        log.info("PDF %s unreadable: %s", name, exc)
        raise MediaError(f"I couldn't read {name}: it doesn't look like a valid PDF.") from exc
    text = "\n\n".join(parts).strip()
    if not text:
        raise MediaError(f"{name} has no text I can read: it looks like scanned pages (images "
                         "only). Send the pages as photos and I'll look at them.")
    return DocumentText(text, pages, truncated)


def plain_text(data: bytes, mime_type: str, name: str, max_chars: int) -> DocumentText:
    """Return a text file decoded (see the module docstring for the charset order).

    Raises:
        MediaError: the bytes contain NUL characters (a binary file sent as text).
    """
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise MediaError(f"{name} doesn't look like a text file, so I can't read it.")
    text = _decode(data, _charset(mime_type))
    return DocumentText(text[:max_chars], None, len(text) > max_chars)


def _charset(mime_type: str) -> str | None:
    for param in (mime_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def _decode(data: bytes, charset: str | None) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in filter(None, (charset, "utf-8-sig")):
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("cp1252", errors="replace")
