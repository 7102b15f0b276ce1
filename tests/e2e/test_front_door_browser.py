"""A new person in a real browser: sign up, pay, chat, cancel (issue #10).

Production wiring from the outside: `hermes serve` (the embedded control plane with a real
local agent), headless chromium through Playwright, the real ``stripe`` SDK against the local
Stripe stand-in (its hosted Checkout and portal pages, webhooks signed like Stripe's) and the
Anthropic stand-in as the model.  Screenshots of every page at desktop and phone width go to
the test's output directory (pytest-playwright's ``output_path``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.serve import STRIPE_SECRET, ServeProcess, wait_until

from standins.anthropic_api import AnthropicStandin, text_reply
from standins.stripe_api import StripeStandin
from standins.telegram_bot_api import TelegramBotApiStandin

pytest.importorskip("playwright")

EMAIL = "new.person@example.com"
PASSWORD = "a long enough passphrase"
REPLY = "Hello! I am your own Hermes agent, running on a machine of my own."
PRICES = {"light": "price_light_e2e", "heavy": "price_heavy_e2e"}
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
TIMEOUT_MS = 120_000
VERIFY_LINK = re.compile(r"https?://[^/\s]+(/signup/verify/[\w-]+)")


@pytest.fixture
def site(tmp_path):
    """`hermes serve` wired to the Stripe, Telegram and Anthropic stand-ins."""
    with TelegramBotApiStandin() as telegram, \
            AnthropicStandin(responder=lambda request: text_reply(REPLY, chunk=8, chunk_delay=0.15)) \
            as anthropic, StripeStandin(webhook_secret=STRIPE_SECRET, prices=PRICES) as stripe_api:
        serve = ServeProcess(tmp_path, telegram, anthropic, extra_env={
            "STRIPE_SECRET_KEY": stripe_api.secret_key, "STRIPE_API_BASE": stripe_api.base_url,
            "STRIPE_PRICE_LIGHT": PRICES["light"], "STRIPE_PRICE_HEAVY": PRICES["heavy"],
            "HERMES_LLM": "anthropic", "HERMES_LLM_CHAIN": "anthropic"})
        stripe_api.webhook_url = f"http://127.0.0.1:{serve.port}/webhooks/stripe"
        try:
            yield serve, stripe_api
        finally:
            assert serve.stop() == 0


def shoot(page, output_path: str, name: str) -> None:
    folder = Path(output_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}-{page.viewport_size['width']}px.png", full_page=True)


def test_a_new_person_signs_up_pays_chats_and_cancels(site, browser, output_path):
    serve, stripe_api = site
    base = f"http://127.0.0.1:{serve.port}"
    desktop = browser.new_context(viewport=VIEWPORTS["desktop"], base_url=base)
    page = desktop.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    page.goto("/")
    shoot(page, output_path, "01-landing")
    page.get_by_role("link", name="Sign up for Light").click()
    page.get_by_label("E-mail").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label(re.compile("Confirm", re.IGNORECASE)).fill(PASSWORD)
    shoot(page, output_path, "02-signup")
    page.get_by_role("button", name="Sign up").click()

    # The account exists only once the address is confirmed: the mailed link (printed to
    # serve.log without SMTP_URL), then the button on its page.
    page.locator("#check-title").wait_for()
    link = wait_until(lambda: VERIFY_LINK.search(serve.log_path.read_text(errors="replace")),
                      60, "the confirmation e-mail").group(1)
    page.goto(link)
    shoot(page, output_path, "02b-confirm")
    page.get_by_role("button", name="Create my account").click()

    # Stripe's hosted Checkout (the stand-in's page, clearly in test mode).
    page.wait_for_url(re.compile(re.escape(stripe_api.base_url) + r"/pay/"))
    assert "LOCAL TEST MODE" in page.content()
    shoot(page, output_path, "03-checkout")
    page.get_by_role("button", name=re.compile("Pay")).click()

    # Back on our success page, which follows provisioning until the agent is ready.
    page.wait_for_url(re.compile(r"/billing/success"))
    page.locator("#link-title").wait_for()  # rendered once the agent reported ready
    assert page.locator("#steps li[data-step='ready'].done").count() == 1
    assert page.locator("a[href^='https://t.me/']").count() >= 1
    assert page.locator("figure.qr svg").count() == 1
    shoot(page, output_path, "04-success")

    page.goto("/dashboard")
    assert page.locator(".state.ready").count() == 1
    shoot(page, output_path, "05-dashboard")

    page.goto("/dashboard/chat")
    page.evaluate("""() => {
        window.__bubbleTexts = [];
        new MutationObserver(() => {
            const agent = document.querySelectorAll('.bubble.agent');
            if (agent.length) window.__bubbleTexts.push(agent[agent.length - 1].textContent);
        }).observe(document.getElementById('chat-log'),
                   {subtree: true, childList: true, characterData: true});
    }""")
    page.get_by_label("Message").fill("Hi Hermes, who are you?")
    page.get_by_role("button", name="Send").click()
    page.locator(".bubble.agent", has_text=REPLY).wait_for()
    seen = page.evaluate("window.__bubbleTexts")
    partial = [t for t in seen if t and t != REPLY and REPLY.startswith(t)]
    assert partial, f"the reply did not stream in (texts seen: {seen})"
    shoot(page, output_path, "06-chat")

    for path, name in (("/billing", "07-billing"), ("/dashboard/settings", "08-settings"),
                       ("/dashboard/chats", "09-chats"), ("/dashboard/commands", "10-commands")):
        page.goto(path)
        assert page.locator("main h1").count() >= 1
        shoot(page, output_path, name)
    page.goto("/billing")
    assert "Light" in page.content()

    # Every page at phone width too, with the same session.
    phone = browser.new_context(viewport=VIEWPORTS["phone"], base_url=base,
                                storage_state=desktop.storage_state())
    small = phone.new_page()
    for path, name in (("/dashboard", "05-dashboard"), ("/dashboard/chat", "06-chat"),
                       ("/billing", "07-billing"), ("/dashboard/settings", "08-settings"),
                       ("/dashboard/chats", "09-chats"), ("/dashboard/commands", "10-commands")):
        small.goto(path)
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORTS["phone"]["width"], f"{path} scrolls sideways at phone width"
        shoot(small, output_path, name)
    phone.close()

    # Cancel in Stripe's portal: the agent is paused, the user sees why, data kept.
    page.goto("/billing/portal")
    page.wait_for_url(re.compile(re.escape(stripe_api.base_url) + r"/portal/"))
    shoot(page, output_path, "11-portal")
    page.get_by_role("button", name="Cancel subscription").click()
    page.get_by_role("link", name=re.compile("Return to Hermes Max")).click()
    wait_until(lambda: _tenant(serve)["status"] == "canceled", 60, "the cancellation webhook")
    page.goto("/dashboard")
    assert re.search(r"paused", page.content(), re.IGNORECASE)
    shoot(page, output_path, "12-dashboard-paused")

    page.get_by_role("button", name="Log out").click()
    page.goto("/dashboard")
    page.wait_for_url(re.compile(r"/login"))
    shoot(page, output_path, "13-login")
    desktop.close()


def _tenant(serve: ServeProcess) -> dict:
    shown = serve.cli("tenants", "show", EMAIL)
    return json.loads(shown.stdout) if shown.returncode == 0 else {}
