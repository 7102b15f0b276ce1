"""Settings declared once: each dataclass field carries its variable(s), default, parser and doc.

``control/settings.py`` (``Settings``) and ``agent/config.py`` (``AgentConfig``) declare every
field with ``setting(...)``; from those declarations alone ``read_env`` builds the constructor
arguments from an environment, ``documented`` writes the class docstring (``help()``) and
``markdown_table`` the README's configuration table (``hermes settings --markdown``).

An unset or empty variable leaves the field at its default (so an empty line in an env file,
or an empty role variable, means "the default"), and the dataclass's ``__post_init__`` derives
what depends on other fields (a database path under the data directory).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

_KEY = "hermes_setting"


@dataclass(frozen=True)
class Declaration:
    """What ``setting`` stores in a field's metadata.

    Attributes:
        env: the environment variables, first non-empty one wins (``()``: constructor only).
        doc: one-paragraph meaning (Markdown: `code` in single backticks).
        parse: raw string -> value; raises ``ValueError`` on bad input.
        read: environment -> value, for a setting combining several variables (overrides
            ``env``/``parse`` when reading; ``env`` still lists the variables for the docs).
        shown: the default as the docs print it, when the value itself would mislead (derived
            or generated defaults).
    """

    env: tuple[str, ...]
    doc: str
    parse: Callable[[str], Any]
    read: Callable[[Mapping[str, str]], Any] | None
    shown: str | None


def setting(env: str | tuple[str, ...] = (), default: Any = MISSING, *, doc: str,
            parse: Callable[[str], Any] = str, read: Callable[[Mapping[str, str]], Any] | None = None,
            shown: str | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """Declare one setting as a dataclass field.

    Args:
        env: variable name, or names tried in order (first non-empty wins); ``()`` for a
            constructor-only knob (tests).
        default: the value when the variable is unset or empty; a dict/list/set default is
            copied for each instance.  Omit it (and ``factory``) for a required field.
        doc: what the setting means, its unit and the source of its default.
        parse: turns the raw string into the value (``int``, ``float``, a list parser...);
            raising ``ValueError`` for bad input.
        read: ``environ -> value`` instead of ``parse`` for settings combining variables.
        shown: the default as documented, when it is derived or generated.
        factory: zero-argument callable producing the default (computed per instance).

    Returns:
        A ``dataclasses.field`` whose metadata holds the ``Declaration``.
    """
    names = (env,) if isinstance(env, str) else tuple(env)
    metadata = {_KEY: Declaration(names, doc, parse, read, shown)}
    if factory is None and isinstance(default, (dict, list, set)):
        factory = _copier(default)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _copier(value):
    return lambda: type(value)(value)


def declarations(cls) -> dict[str, Declaration]:
    """``{field name: Declaration}`` of a settings dataclass, in declaration order."""
    return {f.name: f.metadata[_KEY] for f in fields(cls) if _KEY in f.metadata}


def env_names(cls) -> dict[str, tuple[str, ...]]:
    """``{field name: variable names}`` for every field read from the environment."""
    return {name: d.env for name, d in declarations(cls).items() if d.env}


def read_env(cls, environ: Mapping[str, str], error: type[Exception],
             only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Constructor arguments of ``cls`` from ``environ``: one per set variable.

    Fields whose variables are all unset or empty are left out, so their dataclass default
    (and any ``__post_init__`` derivation) applies.  ``only`` limits the reading to those
    field names.

    Raises:
        error: a required setting (one without default) is unset (``"NAME is required"``), or
            a value does not parse (``"NAME: reason"``); an ``error`` raised by a parser or
            reader passes through unchanged.
    """
    required = {f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING}
    values: dict[str, Any] = {}
    for name, decl in declarations(cls).items():
        if not decl.env or (only is not None and name not in only):
            continue
        if decl.read is not None:
            try:
                values[name] = decl.read(environ)
            except error:
                raise
            except ValueError as exc:
                raise error(str(exc)) from None
            continue
        variable = next((v for v in decl.env if environ.get(v)), None)
        if variable is None:
            if name in required:
                raise error(f"{decl.env[0]} is required")
            continue
        try:
            values[name] = decl.parse(environ[variable])
        except error:
            raise
        except ValueError as exc:
            raise error(f"{variable}: {exc}") from None
    return values


def shown_default(cls, name: str) -> str:
    """The default of field ``name`` as the docs print it (Markdown)."""
    decl = declarations(cls)[name]
    if decl.shown is not None:
        return decl.shown
    spec = next(f for f in fields(cls) if f.name == name)
    if spec.default is not MISSING:
        value = spec.default
    elif spec.default_factory is not MISSING:
        value = spec.default_factory()
    else:
        return "required"
    if value in ("", (), {}, None):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    if isinstance(value, dict):
        return f"`{','.join(f'{k}={v}' for k, v in value.items())}`"
    return f"`{value}`"


def markdown_table(cls) -> str:
    """The Markdown table ``| variable | default | meaning |`` of every variable ``cls`` reads,
    in declaration order, ending with a newline."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, decl in declarations(cls).items():
        if decl.env:
            variables = ", ".join(f"`{v}`" for v in decl.env)
            cells = (variables, shown_default(cls, name), decl.doc)
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def documented(cls):
    """Class decorator: append an ``Attributes`` section generated from the declarations to
    ``cls.__doc__`` (what ``help(cls)`` shows).  Returns ``cls``."""
    lines = ["Attributes (environment variables in brackets, default after ``=``):"]
    for name, decl in declarations(cls).items():
        source = f"[{', '.join(decl.env)}]" if decl.env else "(constructor only)"
        text = f"{name}: {source} = {shown_default(cls, name)}; {decl.doc}"
        lines.append(textwrap.fill(text, width=96, initial_indent="    ",
                                   subsequent_indent="        ", break_on_hyphens=False))
    cls.__doc__ = inspect.cleandoc(cls.__doc__ or "") + "\n\n" + "\n".join(lines) + "\n"
    return cls


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    """Return ``text`` with everything between the marker lines ``begin`` and ``end``
    replaced by ``body``.

    Raises:
        ValueError: a marker is missing or ``end`` comes before ``begin``.
    """
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"markers {begin!r} ... {end!r} not found in order")
    head = text[:start + len(begin)]
    return head + "\n" + body + text[stop:]
