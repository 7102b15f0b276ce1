"""Block Kit views of the Slack app: the App Home tab, the "Ask Hermes" modal and the link modal.

Shapes: https://docs.slack.dev/reference/views (``home``, ``modal``) and
https://docs.slack.dev/reference/block-kit/blocks (``header``, ``section``, ``actions``,
``input``, ``context``).  Limits that matter here: a modal title is at most 24 characters, a
``plain_text_input`` at most 3000 characters (``max_length``).
"""

from __future__ import annotations

from control.models import Machine, Tenant

ASK_MODAL = "hermes_ask"  # callback_id of the "Ask Hermes" modal
LINK_MODAL = "hermes_link"  # callback_id of the link-code modal
ASK_SHORTCUT = "ask_hermes"  # callback_id of the global shortcut (set in the app manifest)
OPEN_ASK = "hermes_open_ask"  # action_id of the Home tab's "Ask Hermes" button
OPEN_LINK = "hermes_open_link"  # action_id of the Home tab's "Link with a code" button
QUESTION_BLOCK, QUESTION_INPUT = "question", "text"
CODE_BLOCK, CODE_INPUT = "code", "code"
MAX_QUESTION = 3000  # characters, Block Kit's plain_text_input maximum

_STATE_TEXT = {
    "ready": "ready", "booting": "starting", "provisioning": "being set up",
    "requested": "being set up", "unhealthy": "not answering (we are on it)",
    "failed": "failed to start (support has been told)", "paused": "paused",
    "deprovisioning": "being removed", "deprovisioned": "removed",
}


def _text(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def _button(label: str, action_id: str, style: str | None = None, url: str | None = None) -> dict:
    button = {"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": action_id}
    if style:
        button["style"] = style
    if url:
        button["url"] = url
    return button


def home_view(tenant: Tenant | None, dashboard_url: str) -> dict:
    """The App Home tab for one person.

    Args:
        tenant: the tenant their Slack identity is linked to, or None.
        dashboard_url: the web dashboard (settings, billing, link codes).

    Returns:
        A ``home`` view: link status, the agent's state and plan, and buttons ("Ask Hermes"
        when linked, "Link with a code" otherwise, and the dashboard).
    """
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": "Hermes"}}]
    if tenant is None:
        blocks.append({"type": "section", "text": _text(
            "*Not linked yet.* Connect Slack to your personal Hermes agent with the link code "
            "from your Hermes dashboard: press *Link with a code*, or send `/hermes link CODE`.")})
        actions = [_button("Link with a code", OPEN_LINK, "primary")]
    else:
        machine = Machine.get_or_none(Machine.tenant == tenant)
        state = _STATE_TEXT.get(machine.state, machine.state) if machine else "not set up yet"
        plan = (tenant.plan or "none").capitalize()
        blocks.append({"type": "section", "fields": [
            _text(f"*Linked to*\n{tenant.email or 'your account'}"),
            _text(f"*Agent*\n{state}"),
            _text(f"*Plan*\n{plan}"),
            _text(f"*Model*\n{tenant.model or 'default'}"),
        ]})
        blocks.append({"type": "context", "elements": [_text(
            "Write to me in this app's *Messages* tab, mention @Hermes in a channel, or use "
            "`/hermes your question`.")]})
        actions = [_button("Ask Hermes", OPEN_ASK, "primary")]
    actions.append(_button("Open dashboard", "hermes_dashboard", url=dashboard_url))
    blocks.append({"type": "actions", "elements": actions})
    return {"type": "home", "blocks": blocks}


def ask_modal() -> dict:
    """The "Ask Hermes" modal: one multi-line question; the answer arrives in the DM."""
    return {
        "type": "modal", "callback_id": ASK_MODAL,
        "title": {"type": "plain_text", "text": "Ask Hermes"},
        "submit": {"type": "plain_text", "text": "Ask"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": QUESTION_BLOCK,
            "label": {"type": "plain_text", "text": "Your question"},
            "hint": {"type": "plain_text", "text": "The answer arrives in your DM with Hermes."},
            "element": {"type": "plain_text_input", "action_id": QUESTION_INPUT,
                        "multiline": True, "max_length": MAX_QUESTION},
        }],
    }


def link_modal() -> dict:
    """The modal asking for a link code (the same single-use code as Telegram's deep link)."""
    return {
        "type": "modal", "callback_id": LINK_MODAL,
        "title": {"type": "plain_text", "text": "Link Hermes"},
        "submit": {"type": "plain_text", "text": "Link"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": CODE_BLOCK,
            "label": {"type": "plain_text", "text": "Link code from your dashboard"},
            "element": {"type": "plain_text_input", "action_id": CODE_INPUT, "max_length": 64},
        }],
    }


def submitted_value(view: dict, block_id: str, action_id: str) -> str:
    """The text a user typed into input ``block_id``/``action_id`` of a submitted view ("")."""
    values = (view.get("state") or {}).get("values") or {}
    value = (values.get(block_id) or {}).get(action_id) or {}
    return str(value.get("value") or "").strip()
