"""The dashboard's settings: model, time zone, reply language and preferences (issue #10).

Validated here, stored on the ``Tenant`` and sent to the agent on every envelope
(``control.services.routing.tenant_preferences``), which applies them per turn
(``agent.preferences``).  A rejected form stores nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from control.errors import BadRequest
from control.models import Tenant, utcnow
from wire.pricing import PRICES_CENTS_PER_MTOK

PREFERENCES_MAX_CHARS = 1000
"""Longest "about me / how to answer" text (it goes into every turn's system prompt)."""

LANGUAGES: dict[str, str] = {
    "en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "it": "Italiano",
    "nl": "Nederlands", "pt": "Português", "pl": "Polski", "uk": "Українська", "tr": "Türkçe",
    "ja": "日本語", "zh": "中文",
}
"""The reply languages offered in the form, by BCP 47 tag; any other valid tag may be typed."""

# RFC 5646 (BCP 47) language tag, simplified: a 2-3 letter primary language, then up to four
# subtags of 2-8 letters or digits (script, region, variant).  Enough to refuse typos.
BCP47 = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,4}$")


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model menu: ``value`` is what the agent's ``/model`` accepts."""

    value: str
    label: str


def model_catalog(agent_env: Mapping[str, str]) -> list[ModelChoice]:
    """Return the models a tenant may choose, for the backends the agents are configured with.

    The chain is worked out as ``agent.config.AgentConfig.from_env`` does (``HERMES_LLM_CHAIN``,
    else ``HERMES_LLM``, else ``anthropic`` when agents are given the gateway's Anthropic URL,
    which comes with their gateway token as the key, and ``local`` otherwise).  Anthropic
    models are those with a price (``wire.pricing``, plus ``HERMES_PRICES_JSON`` if the
    operator set it there): ``/model`` refuses an unpriced one.

    Args:
        agent_env: ``Runtime.agent_env()`` (``agent_settings.base_agent_env``).

    Returns:
        The choices, the empty value ("the operator's default chain") first.
    """
    llm = agent_env.get("HERMES_LLM") or ("anthropic" if agent_env.get("ANTHROPIC_BASE_URL") else "local")
    chain = [p.strip() for p in agent_env.get("HERMES_LLM_CHAIN", "").split(",") if p.strip()] or [llm]
    choices = [ModelChoice("", "Default (the operator's model chain)")]
    if "anthropic" in chain:
        prices = dict(PRICES_CENTS_PER_MTOK)
        with contextlib.suppress(ValueError):
            prices.update(json.loads(agent_env.get("HERMES_PRICES_JSON") or "{}"))
        for model, (price_in, price_out) in prices.items():
            choices.append(ModelChoice(model, f"{model} (${price_in / 100:.2f} in / "
                                              f"${price_out / 100:.2f} out per million tokens)"))
    if "openai_compat" in chain:
        choices.append(ModelChoice("openai_compat", "The operator's OpenAI-compatible server"))
    if "local" in chain:
        choices.append(ModelChoice("local", "Local model on your server (free, slower)"))
    return choices


@dataclass(frozen=True)
class SettingsForm:
    """A submitted settings form, as text (``None`` for a field left out)."""

    model: str = ""
    timezone: str = ""
    language: str = ""
    preferences: str = ""


class InvalidSettings(BadRequest):
    """Some fields of the settings form are invalid (400 ``invalid_settings``).

    Attributes:
        errors: field name -> what is wrong with it, shown next to the field.
    """

    code = "invalid_settings"

    def __init__(self, errors: dict[str, str]):
        super().__init__("Please correct the marked fields.")
        self.errors = errors


def validate(form: SettingsForm, catalog: list[ModelChoice]) -> dict[str, str | None]:
    """Return the tenant fields to store, or raise listing every bad field.

    Args:
        form: the submitted values.
        catalog: ``model_catalog(...)``.

    Returns:
        ``{"model", "timezone", "language", "preferences"}``, an empty input as None.

    Raises:
        BadRequest: a field is invalid; ``.errors`` maps field name to message.
    """
    errors: dict[str, str] = {}
    model = form.model.strip()
    if model not in {c.value for c in catalog}:
        errors["model"] = "Choose a model from the list."
    zone = form.timezone.strip()
    if zone and not _is_zone(zone):
        errors["timezone"] = "Not an IANA time zone; use a name such as Europe/Berlin or America/New_York."
    language = form.language.strip()
    if language and not BCP47.match(language):
        errors["language"] = "Not a language tag; use one such as en, de or pt-BR."
    preferences = form.preferences.strip().replace("\r\n", "\n")
    if len(preferences) > PREFERENCES_MAX_CHARS:
        errors["preferences"] = (f"At most {PREFERENCES_MAX_CHARS} characters "
                                 f"(this has {len(preferences)}).")
    if errors:
        raise InvalidSettings(errors)
    return {"model": model or None, "timezone": zone or None, "language": language or None,
            "preferences": preferences or None}


def save(tenant: Tenant, values: Mapping[str, str | None]) -> None:
    """Store validated ``values`` (from ``validate``) on ``tenant``."""
    Tenant.update(**values, updated_at=utcnow()).where(Tenant.id == tenant.id).execute()


@functools.cache
def zone_names() -> tuple[str, ...]:
    """Return every IANA zone name this system knows, sorted (for the form's suggestions)."""
    # ``localtime`` is the machine's own zone, not a place: it would differ on the agent's VM.
    return tuple(sorted(available_timezones() - {"localtime"}))


def _is_zone(name: str) -> bool:
    """True for a zone of the IANA database that loads (not a file path such as ``localtime``)."""
    if name not in zone_names():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
