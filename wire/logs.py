"""One log pipeline for every Hermes process: structlog over the standard library.

Each entry point (``hermes`` commands, gunicorn's ``control:create_app()``, ``python -m
agent.main``) calls ``configure`` once.  After that a ``logging.getLogger(...)`` record and a
``structlog.get_logger(...)`` event leave through the same handler on stderr and are rendered
the same way, following structlog's "Rendering Using structlog-based Formatters Within logging"
recipe (``structlog.stdlib.ProcessorFormatter``, structlog docs, "Standard Library Logging"):

* ``json``: one JSON object per line (production: the control host's journal, the agent VM's
  journal), keys ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` and the ids below;
* ``console``: aligned, readable lines for a terminal (the local default).

Ids that let one message be followed from the webhook to the delivery are bound with
structlog's context variables (``bound``), so every line logged while they are bound carries
them, whichever logging API wrote it: ``request_id`` (one HTTP request of the control plane,
carried to the agent in ``Envelope.request_id``), ``tenant`` and ``envelope_id``.

Lives in ``wire`` because it is the only package both the control plane and the agent import.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import structlog

ENV_VAR = "HERMES_LOG_FORMAT"
FORMATS = ("console", "json")
"""Values of ``HERMES_LOG_FORMAT``; ``console`` when unset."""

TRACE_KEYS = ("request_id", "tenant", "envelope_id")
"""The ids bound while handling one message, in the order a reader follows them."""


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is when a record is emitted.

    A handler holding the stream it was created with writes into a closed file once that
    stream is replaced (pytest's capture, a daemon redirecting its output).
    """

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


_SHARED_PROCESSORS = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
)


def format_from_env(environ: Mapping[str, str] | None = None) -> str:
    """Return HERMES_LOG_FORMAT from ``environ`` (default ``os.environ``), ``console`` when unset.

    The one reading of the variable: ``control/settings.py`` and ``agent/config.py`` call it
    for their settings, and ``hermes`` calls it to set up logging before any other setting is
    read (and whether or not the rest are valid).

    Raises:
        ValueError: the value is not one of ``FORMATS``.
    """
    value = (os.environ if environ is None else environ).get(ENV_VAR) or "console"
    if value not in FORMATS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def configure(fmt: str = "console", level: int = logging.INFO) -> None:
    """Route structlog through the standard library and render every record as ``fmt``.

    Idempotent: a second call replaces the handler the first one installed (and any handler a
    ``logging.basicConfig`` left on the root logger), so entry points that nest (``hermes
    serve`` building the app) cannot log a line twice.  Handlers that others attached
    deliberately, such as pytest's capture handler, are kept.  Python warnings are logged too
    (``logging.captureWarnings``), and in ``json`` tqdm progress bars (which model loaders
    draw on stderr) are switched off with tqdm's ``TQDM_DISABLE`` variable, so a JSON stream
    holds nothing but JSON; tqdm reads it when first imported, so call this before that.
    ``httpx`` logs from WARNING up only: its INFO lines show request URLs, and a Telegram Bot
    API URL carries the bot token.

    Args:
        fmt: ``json`` or ``console`` (one of ``FORMATS``).
        level: the root logger's level (a ``logging`` constant).

    Raises:
        ValueError: ``fmt`` is not one of ``FORMATS``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Loggers created before configure (module-level ``structlog.get_logger``) must follow it.
        cache_logger_on_first_use=False,
    )
    if fmt == "json":
        os.environ.setdefault("TQDM_DISABLE", "1")
        renderers: list[structlog.typing.Processor] = [structlog.processors.format_exc_info,
                                                      structlog.processors.JSONRenderer()]
    else:
        # Plain tracebacks: Rich's default shows local variables, which may hold secrets.
        renderers = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                                   exception_formatter=structlog.dev.plain_traceback)]
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(_SHARED_PROCESSORS),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO, and a Bot API URL holds the bot token (a secret).
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Bind ``ids`` (e.g. ``tenant``, ``envelope_id``) to every line logged inside the block.

    ``None`` values are left out, so an envelope without a ``request_id`` (a cron run) adds no
    empty key.  On exit the previous values are restored: blocks nest, and a worker thread
    handling the next message starts from what it had before.
    """
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
        yield


def envelope_ids(envelope) -> dict[str, str | None]:
    """Return the ids to bind while handling ``envelope`` (a ``wire.protocol.Envelope``).

    ``request_id`` (None for cron runs), ``tenant`` and ``envelope_id``: pass them to ``bound``.
    """
    return {"request_id": envelope.request_id, "tenant": envelope.tenant,
            "envelope_id": envelope.id}


def bind(**ids: str) -> None:
    """Bind ``ids`` until ``clear`` (for a block that spans hooks, like one HTTP request)."""
    structlog.contextvars.bind_contextvars(**ids)


def clear() -> None:
    """Unbind every id this thread has bound (start and end of an HTTP request)."""
    structlog.contextvars.clear_contextvars()


def current(key: str) -> str | None:
    """Return the value bound to ``key`` in this context, or None (e.g. ``current("request_id")``)."""
    return structlog.contextvars.get_contextvars().get(key)
