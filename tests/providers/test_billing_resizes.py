"""Plan changes from Stripe reach the Hetzner provisioner: upgrades now, downgrades at period end."""

from __future__ import annotations

from datetime import timedelta

from control.db import init_database
from control.models import Machine, Subscription, Tenant, utcnow
from control.providers.base import MachineSpec
from control.services import provisioning


def _server_type(hcloud_api, tenant_id: int) -> str:
    [server] = [s for s in hcloud_api.servers.values() if s["labels"].get("tenant") == str(tenant_id)]
    return server["server_type"]["name"]


def test_stripe_downgrade_waits_for_the_period_end_then_applies(tmp_path, make_provisioner,
                                                                hcloud_api, spec_env):
    db = init_database(f"sqlite:///{tmp_path / 'control.db'}")
    prov = make_provisioner()
    with db.connection_context():
        tenant = Tenant.create(email="h@example.com", plan="heavy", status="active")
        Subscription.create(stripe_subscription_id="sub_h", tenant=tenant, status="active",
                            plan="light", current_period_end=utcnow() + timedelta(days=10))
        Machine.create(tenant=tenant, plan="heavy", state="ready")
        prov.provision(MachineSpec(str(tenant.id), "heavy", spec_env))

        resized = []
        provisioning.request_machine(tenant, "light", enqueue=lambda t: None,
                                     enqueue_resize=lambda t, plan: resized.append((t, plan)))
        assert resized == [(tenant.id, "light")]
        machine = provisioning.run_resize(tenant.id, "light", prov)
        assert machine.plan == "heavy" and "scheduled" in machine.detail
        assert provisioning.apply_due_downgrades(prov) == []
        assert _server_type(hcloud_api, tenant.id) == "cx33"

        Subscription.update(current_period_end=utcnow() - timedelta(minutes=1)).execute()
        assert provisioning.apply_due_downgrades(prov) == [tenant.id]
        assert Machine.get().plan == "light"
        assert _server_type(hcloud_api, tenant.id) == "cx23"


def test_stripe_upgrade_resizes_now(tmp_path, make_provisioner, hcloud_api, spec_env):
    db = init_database(f"sqlite:///{tmp_path / 'control.db'}")
    prov = make_provisioner()
    with db.connection_context():
        tenant = Tenant.create(email="u@example.com", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state="ready")
        prov.provision(MachineSpec(str(tenant.id), "light", spec_env))
        assert provisioning.run_resize(tenant.id, "heavy", prov).plan == "heavy"
        assert _server_type(hcloud_api, tenant.id) == "cx33"
