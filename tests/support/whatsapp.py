"""WhatsApp test helpers: the app configured against the Graph API stand-in, signed posts."""

from __future__ import annotations

import json

from control.channels.whatsapp import Template, WhatsAppAdapter, WhatsAppConfig
from control.services.whatsapp_window import in_window
from standins.whatsapp_api import signed_headers

APP_SECRET = "whatsapp-app-secret"
VERIFY_TOKEN = "whatsapp-verify-token"
BUSINESS_NUMBER = "15550783881"
PATH = "/webhooks/whatsapp"
WA_ID = "972987654321"  # the user's number (wa_id) the tests link


def configure(app, runtime, api, template: str = "", throughput: float = 80.0) -> WhatsAppAdapter:
    """Point the app's WhatsApp webhook and adapter at the stand-in ``api``; return the adapter."""
    config = WhatsAppConfig(verify_token=VERIFY_TOKEN, app_secret=APP_SECRET,
                            access_token=api.access_token, phone_number_id=api.phone_number_id,
                            business_number=BUSINESS_NUMBER, api_base=api.base_url,
                            template=template)
    app.extensions["whatsapp"] = config
    adapter = WhatsAppAdapter(config.access_token, config.phone_number_id, in_window,
                              config.api_base, Template.parse(template), throughput=throughput)
    runtime.whatsapp_adapter = adapter  # the cached property, as Runtime builds it from settings
    return adapter


def post(client, body, secret: str = APP_SECRET, raw: bytes | None = None,
         signature: str | None = None):
    """POST ``body`` (or ``raw`` bytes) to the webhook, signed with ``secret`` unless
    ``signature`` is given (``""``: no header)."""
    data = raw if raw is not None else json.dumps(body).encode()
    headers = signed_headers(data, secret)
    if signature is not None:
        headers.pop("X-Hub-Signature-256")
        if signature:
            headers["X-Hub-Signature-256"] = signature
    return client.post(PATH, data=data, headers=headers)
