"""Huey tasks of the control plane; each only calls a service.

Tasks are bound to a Huey instance at start-up (``ControlTasks``) because the queue (Redis or a
SQLite file, ``create_huey``) comes from settings; in tests ``huey_immediate`` runs them
inline with the same code.

Provisioning has a queue of its own (issue 22, ``PROVISION_QUEUE``, same storage), consumed by
``HERMES_PROVISION_WORKERS`` threads.  A ``pulumi up`` is a subprocess the Automation API waits
on for ~20 s; a thread waiting on it costs no CPU and a few MB, so many such threads are the
lightweight workers (the ``pulumi`` process itself, ~150 MB, bounds their number).  Submitting
``up`` and polling it in a later task was not chosen: the Automation API has no detached ``up``,
and the per-stack lock (``hetzner.locking``) would have to outlive a task.  The hcloud API stays
within Hetzner's 3,600 requests/hour through the shared budget (``hetzner.api_budget``) each
``up`` takes its cost from.
"""

from __future__ import annotations

import contextlib
import logging
from functools import cached_property

import redis
from huey import MemoryHuey, PriorityRedisHuey, SqliteHuey, crontab

from control.channels.base import ChannelError
from control.channels.telegram_adapter import TelegramAdapter
from control.channels.web import WebAdapter
from control.models import Connection, Tenant, utcnow
from control.services import (
    bus_quota,
    channel_watchdog,
    connections,
    discord_interactions,
    discord_routing,
    jobs,
    lifecycle,
    llm_registry,
    machine_health,
    mail,
    media,
    notices,
    provisioning,
    routing,
    warm_pool,
)
from control.services.delivery_recovery import report_overwrite
from control.services.secrets_box import box_from_settings
from wire import redis_bus

log = logging.getLogger(__name__)

# Attempts after the first for a message's file downloads (``ingest_media``).
MEDIA_RETRIES = 5
# Attempts after the first for a job's callback (``send_job_callback``).
JOB_CALLBACK_RETRIES = 5
# Seconds for any Redis reply to the queue; longer than the consumer's 1 s blocking pop.
QUEUE_SOCKET_TIMEOUT = 10.0


#: The dedicated provisioning queue (issue 22): ``provision_machine`` only, consumed by
#: ``HERMES_PROVISION_WORKERS`` threads of its own (``control.server.Server.start_workers``).
PROVISION_QUEUE = "hermes-provision"


def create_huey(settings, name: str = "hermes-control"):
    """Return the control plane's Huey for ``settings.task_queue`` (``HERMES_TASK_QUEUE``);
    ``name`` picks the queue (``PROVISION_QUEUE``: the provisioning one, same storage).

    * ``redis``: ``PriorityRedisHuey`` on the bus's Redis (``settings.bus_url``, TLS verified
      with ``settings.bus_ca_file`` as the bus is), keys ``huey.*.hermescontrol``; consumers
      on several hosts share the queue.  Priorities behave as in SQLite (both storages honour
      ``priority``).
    * ``sqlite``: ``SqliteHuey`` on ``settings.huey_path`` (one host; the embedded default).
    * ``huey_immediate`` (tests): tasks run inline.

    Raises:
        BusTLSError: ``bus_ca_file`` is set but not a readable file.
    """
    if settings.huey_immediate:
        return MemoryHuey(name, immediate=True)
    if settings.task_queue == "redis":
        # Huey stores pickled bytes: its own pool, not the bus's decoding client.
        pool = redis.ConnectionPool.from_url(
            settings.bus_url, socket_timeout=QUEUE_SOCKET_TIMEOUT,
            **redis_bus.tls_options(settings.bus_url, settings.bus_ca_file))
        return PriorityRedisHuey(name, connection_pool=pool)
    return SqliteHuey(name, filename=settings.huey_path)


class ControlTasks:
    """The control plane's tasks, registered on ``runtime.huey``.

    Args:
        runtime: the ``control.runtime.Runtime`` (settings, provisioner, Bot API client).
    """

    def __init__(self, runtime):
        self.runtime = runtime
        huey = runtime.huey
        settings = runtime.settings
        self.health_policy = machine_health.HealthPolicy.from_settings(settings)
        # run_provisioning raises on a transient failure while attempts remain (it counts them in
        # the database, so a restart does not reset them); Huey runs it again with backoff.  It
        # has a queue of its own (issue 22): a sign-up wave waits on `pulumi up`s there, not in
        # front of notices and media.
        self.provision_machine = runtime.provision_huey.task(
            retries=max(0, settings.provision_attempts - 1), retry_delay=settings.provision_retry_delay,
            retry_backoff=2.0, name="provision_machine")(self._provision_machine)
        # Ready deadlines and heartbeats are checked every minute: the interval is 30 s by default.
        self.check_machines = huey.periodic_task(crontab(minute="*"), name="check_machines")(
            self._check_machines)
        # The warm pool (issue 22): topped up, swept and renewed every minute when configured.
        if settings.warm_pool:
            self.top_up_warm_pool = huey.periodic_task(crontab(minute="*"), name="top_up_warm_pool")(
                self._top_up_warm_pool)
        # Paid machines whose provisioning task was never queued (issue 19, finding 8).
        self.requeue_requested = huey.periodic_task(crontab(minute="*"), name="requeue_requested")(
            self._requeue_requested)
        # Deaf chat channels (issue #11) are looked for every minute; expired Discord
        # interaction tokens are deleted on the way.
        self.watch_channels = huey.periodic_task(crontab(minute="*"), name="watch_channels")(
            self._watch_channels)
        # The LLM backend registry (issue 23): each configured provider route's health, probed
        # every minute with a free model-list call.
        self.probe_llm_backends = huey.periodic_task(crontab(minute="*"), name="probe_llm_backends")(
            self._probe_llm_backends)
        # Each tenant's Redis memory against its plan's quota (issue 19, finding 3).
        self.enforce_bus_quota = huey.periodic_task(crontab(minute="*"), name="enforce_bus_quota")(
            self._enforce_bus_quota)
        # Telegram may rate-limit or be briefly unreachable; replies are worth retrying.
        self.deprovision_machine = huey.task(retries=3, retry_delay=30, name="deprovision_machine")(
            self._deprovision_machine)
        self.resize_machine = huey.task(retries=3, retry_delay=30, name="resize_machine")(
            self._resize_machine)
        self.restart_machine = huey.task(retries=3, retry_delay=30, name="restart_machine")(
            self._restart_machine)
        self.operator_pause_machine = huey.task(retries=3, retry_delay=30,
                                                name="operator_pause_machine")(
            self._operator_pause_machine)
        # Stripe downgrades take effect at the period end; check four times an hour.
        self.apply_due_downgrades = huey.periodic_task(crontab(minute="*/15"), name="apply_due_downgrades")(
            self._apply_due_downgrades)
        # A linked user's Discord command, acknowledged before its writes (discord_routing):
        # routed at once, retried while the bus is down, within the token's 15 minutes.
        self.route_discord_interaction = huey.task(
            retries=6, retry_delay=5, retry_backoff=2.0, priority=10,
            name="route_discord_interaction")(self._route_discord_interaction)
        # Notices (``control.services.notices``): one linked person on one platform each.
        self.send_notice = huey.task(retries=5, retry_delay=2, retry_backoff=2.0,
                                     name="send_notice")(self._send_notice)
        # Jobs API callbacks (issue 23): a receiver that is down or answers non-2xx is tried
        # again after 5, 10, 20, 40, 80 s (about 2.5 minutes in all), then marked failed.
        self.send_job_callback = huey.task(retries=JOB_CALLBACK_RETRIES, retry_delay=5,
                                           retry_backoff=2.0, context=True,
                                           name="send_job_callback")(self._send_job_callback)
        # The control plane's own answers (linking, help, "not linked yet") on every platform.
        self.send_channel_text = huey.task(retries=5, retry_delay=2, name="send_channel_text")(
            self._send_channel_text)
        # A WhatsApp status that came before the delivery worker saved the reply's wamid is
        # matched again for about two minutes (10 s, then doubling), then dropped.
        self.record_whatsapp_status = huey.task(retries=4, retry_delay=10, retry_backoff=2.0,
                                                name="record_whatsapp_status")(
            self._record_whatsapp_status)
        # Media (issue #12): a message's files are downloaded and stored before it is published;
        # transient failures (5xx, timeouts, object storage) retried after 5, 10, 20, 40, 80 s,
        # then published with the file marked unavailable (the task knows its attempt: context).
        self.ingest_media = huey.task(retries=MEDIA_RETRIES, retry_delay=5, retry_backoff=2.0,
                                      context=True, name="ingest_media")(self._ingest_media)
        self.prune_media = huey.periodic_task(crontab(minute="41", hour="4"), name="prune_media")(
            self._prune_media)
        # Nightly backups (control DB + every running tenant's agent data), at a fixed UTC hour.
        self.run_backups = huey.periodic_task(crontab(minute="0", hour=str(settings.backup_hour)),
                                              name="run_backups")(self._run_backups)
        # Subscription lifecycle (issue #10): pause on cancellation, resume on resubscription,
        # and hourly the end of grace periods (archive + destroy) and archive retention.
        self.pause_machine = huey.task(retries=3, retry_delay=30, name="pause_machine")(
            self._pause_machine)
        self.resume_machine = huey.task(retries=3, retry_delay=30, name="resume_machine")(
            self._resume_machine)
        self.end_grace = huey.periodic_task(crontab(minute="7"), name="end_grace")(self._end_grace)
        # Connections (issue #13): Composio's connected accounts vs ours, four times an hour.
        if settings.composio_api_key:
            self.reconcile_connections = huey.periodic_task(
                crontab(minute="*/15"), name="reconcile_connections")(self._reconcile_connections)
            # An agent that reports ready (new, restarted, restored) is sent its MCP configuration
            # (issue 19, finding 9); Composio or the bus may be briefly away: retried.
            self.publish_mcp_config = huey.task(retries=3, retry_delay=30, name="publish_mcp_config")(
                self._publish_mcp_config)
        # Outbox mail goes out every minute over SMTP_URL; without it `hermes serve` prints it.
        if settings.smtp_url:
            self.send_mail = huey.periodic_task(crontab(minute="*"), name="send_mail")(self._send_mail)

    def _provision_machine(self, tenant_id: int) -> str:
        rt = self.runtime
        env = {**rt.agent_env(), "HERMES_HEARTBEAT_INTERVAL": str(rt.settings.heartbeat_interval)}
        with rt.db.connection_context():
            machine = provisioning.run_provisioning(
                tenant_id, rt.provisioner, env, rt.settings.link_token_ttl,
                policy=self.health_policy, notify=self.send_notice,
                box=box_from_settings(rt.settings) if rt.settings.warm_pool else None)
            return str(machine.state)

    def _top_up_warm_pool(self) -> dict[str, object]:
        """``warm_pool.sweep`` then ``warm_pool.top_up`` (stale snapshot out, missing ones in)."""
        rt = self.runtime
        # One run at a time: a create between two runs' sweeps must not look like an orphan.
        with rt.huey.lock_task("top_up_warm_pool"), rt.db.connection_context():
            swept = warm_pool.sweep(rt.provisioner)
            report = warm_pool.top_up(rt.provisioner, rt.settings.warm_pool,
                                      rt.settings.agent_control_url)
        if report.failures or swept.failures:
            log.error("warm pool: failures %s %s", report.failures, swept.failures)
        return {"created": report.created, "retired": report.retired,
                "orphans": swept.orphans, "failed": sorted({**report.failures, **swept.failures})}

    def _check_machines(self) -> dict[str, list[int]]:
        rt = self.runtime
        with rt.db.connection_context():
            return machine_health.check_machines(
                self.health_policy, notify=self.send_notice,
                enqueue=lambda tenant_id, delay: self.provision_machine.schedule((tenant_id,), delay=delay))

    def _requeue_requested(self, now=None) -> dict[str, list[int]]:
        with self.runtime.db.connection_context():
            return provisioning.requeue_requested(self.provision_machine, self.queued_provisioning,
                                                  now=now)

    def queued_provisioning(self) -> set[int]:
        """Tenant ids with a ``provision_machine`` task waiting in the queue or the schedule
        (a retry's backoff, ``machine_health.retry_or_fail``'s delay)."""
        huey = self.runtime.provision_huey
        name = self.provision_machine.name
        return {task.args[0] for task in (*huey.pending(), *huey.scheduled())
                if task.name == name and task.args}

    def _watch_channels(self) -> dict[str, bool]:
        with self.runtime.db.connection_context():
            discord_interactions.prune()
            return {v.channel: v.healthy for v in channel_watchdog.watch()}

    def _probe_llm_backends(self) -> dict[str, bool]:
        with self.runtime.db.connection_context():
            return llm_registry.probe(self.runtime.settings)

    def _enforce_bus_quota(self) -> dict[str, list[str]] | None:
        with self.runtime.db.connection_context():
            report = bus_quota.run_from_settings(self.runtime.settings)
        return None if report is None else {"suspended": report.suspended, "resumed": report.resumed}

    def _deprovision_machine(self, tenant_id: int) -> str:
        rt = self.runtime
        with rt.db.connection_context():
            return str(provisioning.run_deprovisioning(tenant_id, rt.provisioner,
                                                       bus_url=rt.settings.bus_url,
                                                       bus_ca_file=rt.settings.bus_ca_file).state)

    def _resize_machine(self, tenant_id: int, plan: str) -> str:
        rt = self.runtime
        with rt.db.connection_context():
            return provisioning.run_resize(tenant_id, plan, rt.provisioner).plan

    def _restart_machine(self, tenant_id: int) -> str:
        rt = self.runtime
        with rt.db.connection_context():
            return str(provisioning.run_restart(tenant_id, rt.provisioner).state)

    def _operator_pause_machine(self, tenant_id: int) -> str | None:
        rt = self.runtime
        with rt.db.connection_context():
            machine = provisioning.run_operator_pause(tenant_id, rt.provisioner)
            return str(machine.state) if machine else None

    def _apply_due_downgrades(self) -> list[int]:
        rt = self.runtime
        with rt.db.connection_context():
            return provisioning.apply_due_downgrades(rt.provisioner)

    def _run_backups(self) -> dict[str, object]:
        # deferred: backups pull the provisioner code (tenacity, infra, cryptography) into workers
        # that never back up.
        from control.services import backups

        rt = self.runtime
        with rt.db.connection_context():
            report = backups.run_from_settings(rt.settings)
        if report.failures:
            log.error("nightly backup: %d tenant(s) failed: %s", len(report.failures), report.failures)
        return {"control": report.control and report.control.key, "tenants": len(report.tenants),
                "failed": sorted(report.failures), "pruned": len(report.pruned)}

    def _send_mail(self) -> int:
        rt = self.runtime
        with rt.db.connection_context():
            return mail.send_pending(rt.settings)

    def _reconcile_connections(self) -> dict[int, list[str]]:
        rt = self.runtime
        with rt.db.connection_context():
            return connections.from_runtime(rt).reconcile()

    def agent_ready(self, tenant_id: int) -> None:
        """The delivery worker's hook for an agent's lifecycle ``ready``: queue
        ``publish_mcp_config`` (only when Composio is configured).  A queue failure is logged,
        not raised: the lifecycle event is recorded and the reconciliation publishes later."""
        if not self.runtime.settings.composio_api_key:
            return
        try:
            self.publish_mcp_config(tenant_id)
        except Exception:  # a queue failure must not stop the delivery worker
            log.exception("could not queue the MCP configuration of tenant %s", tenant_id)

    def _publish_mcp_config(self, tenant_id: int) -> int | None:
        """Publish the tenant's ``mcp_config`` (``Connections.publish_config``) when it ever had a
        connection; returns the number of servers sent, None when nothing was sent."""
        rt = self.runtime
        with rt.db.connection_context():
            tenant = Tenant.get_or_none(Tenant.id == tenant_id)
            if (tenant is None or tenant.deleted_at is not None
                    or not Connection.select().where(Connection.tenant == tenant).exists()):
                return None
            return len(connections.from_runtime(rt).publish_config(tenant).mcp_servers or {})

    def billing_url(self) -> str:
        """The page where a user pays or resubscribes."""
        return self.runtime.settings.public_url.rstrip("/") + "/billing"

    def paused_notice(self, tenant) -> str:
        """The answer a canceled tenant's chats get instead of their agent, in the tenant's
        language (``lifecycle.pause_notice``: paused, archived or ended)."""
        return lifecycle.pause_notice(tenant, self.billing_url(), self.runtime.settings.archive_retention_days)

    def _pause_machine(self, tenant_id: int) -> str | None:
        rt = self.runtime
        with rt.db.connection_context():
            machine = lifecycle.pause_machine(tenant_id, rt.provisioner, self.send_notice,
                                              self.billing_url(), rt.settings.archive_retention_days)
            return str(machine.state) if machine else None

    def _resume_machine(self, tenant_id: int) -> str | None:
        rt = self.runtime
        with rt.db.connection_context():
            machine = lifecycle.resume_machine(tenant_id, rt.provisioner, self.health_policy)
            return str(machine.state) if machine else None

    def _end_grace(self) -> dict[str, object]:
        rt = self.runtime
        with rt.db.connection_context():
            report = lifecycle.end_grace(
                utcnow(), rt.provisioner, env=rt.settings.env,
                retention_days=rt.settings.archive_retention_days,
                request=lambda tenant, plan: provisioning.request_machine(
                    tenant, plan, self.provision_machine), send=self.send_notice,
                billing_url=self.billing_url(), bus_url=rt.settings.bus_url,
                bus_ca_file=rt.settings.bus_ca_file)
        if report.failures:
            log.error("end of grace: %d tenant(s) failed: %s", len(report.failures), report.failures)
        return {"archived": report.archived, "failed": sorted(report.failures),
                "pruned": len(report.pruned)}

    def _send_channel_text(self, channel: str, chat_id: str, text: str) -> None:
        """Send a control-plane answer to ``chat_id`` and log it (``_deliver``)."""
        self._deliver(channel, chat_id, lambda adapter: routing.record_control_reply(
            channel, chat_id, text, adapter.send(chat_id, text)))

    def _route_discord_interaction(self, interaction) -> str:
        """``discord_routing.route_deferred`` for an interaction ``respond`` acknowledged."""
        rt = self.runtime
        with self._connection():
            return discord_routing.route_deferred(interaction, rt.bus, rt.discord_adapter,
                                                  envelope_key=rt.envelope_key,
                                                  paused_notice=self.paused_notice)

    def queue_job_callbacks(self, ended) -> None:
        """Queue ``send_job_callback`` for each job of ``ended`` (``Job`` rows) that has a
        callback URL.  A queue failure is logged, not raised: the job's state is stored and
        its poll answers it; the callback stays ``pending``."""
        for job in ended:
            if not job.callback_url:
                continue
            try:
                self.send_job_callback(job.id)
            except Exception:  # a queue failure must not fail the request or the delivery worker
                log.exception("could not queue the callback of job %s", job.public_id)

    def _send_job_callback(self, job_id: int, task=None) -> str:
        """POST a finished job to its callback URL, signed (``jobs.deliver_callback``); raises
        ``CallbackFailed`` for Huey to retry while attempts remain."""
        settings = self.runtime.settings
        with self._connection():
            return jobs.deliver_callback(job_id, box_from_settings(settings), env=settings.env,
                                         final_attempt=task is None or not task.retries)

    def _send_notice(self, channel: str, identity: str, text: str) -> None:
        """Tell one linked person a notice (``notices.send_direct``, through ``_deliver``)."""
        self._deliver(channel, identity, lambda adapter: notices.send_direct(adapter, identity, text))

    def _deliver(self, channel: str, to: str, send) -> None:
        """Run ``send(adapter)`` with ``channel``'s adapter and a database connection: a missing
        adapter or a refusal is logged and dropped, a rate limit or an unreachable platform
        raises so Huey retries."""
        adapter = self.adapters.get(channel)
        if adapter is None:
            log.error("no %s adapter configured; message to %s dropped", channel, to)
            return
        with self._connection():
            try:
                send(adapter)
            except ChannelError as exc:
                if not exc.permanent:
                    raise
                log.error("message to %s %s refused: %s", channel, to, exc)

    def _connection(self):
        """A connection for a task's queries; in immediate mode (tests) a task may run inside
        the caller's open transaction, whose connection must stay open."""
        db = self.runtime.db
        return db.connection_context() if db.is_closed() else contextlib.nullcontext()

    @cached_property
    def adapters(self) -> dict:
        """Every configured platform's adapter by channel name, Telegram's included."""
        # A recovery probe that overwrote an unrecorded bot message raises an attention item.
        return {"telegram": TelegramAdapter(self.runtime.bot, on_overwrite=report_overwrite),
                "web": WebAdapter(), **self.runtime.channel_adapters()}

    def _record_whatsapp_status(self, message_id: str, status: str, recipient: str,
                                timestamp: str, error: str) -> str:
        """Match a status callback to its reply again; raises ``StatusNotMatched`` (Huey
        retries) while no reply has the wamid."""
        # deferred: pywa (~180 ms) only on a host where WhatsApp is configured.
        from control.channels.whatsapp_inbound import StatusUpdate
        from control.services import whatsapp_status

        update = StatusUpdate(message_id, status, recipient, timestamp, error)
        with self.runtime.db.connection_context():
            outcome = whatsapp_status.record_status(update)
        if outcome == "unknown":
            raise whatsapp_status.StatusNotMatched(f"no WhatsApp reply has {message_id} yet")
        return outcome

    @cached_property
    def media(self):
        """``(store, signer, adapters)`` of the media pipeline (``control.services.media``):
        the media store, the URL signer, and every configured channel's adapter."""
        # deferred: the web stack (flask-login, flask-wtf, ~280 ms) only for media URLs.
        from control.web.auth import secret_key

        rt = self.runtime
        signer = media.MediaSigner(secret_key(rt.settings), rt.settings.public_url)
        return media.store_from_settings(rt.settings), signer, self.adapters

    def _ingest_media(self, envelope_json: str, task=None) -> str:
        rt = self.runtime
        store, signer, adapters = self.media
        # Slack's bot tokens are read from the database.
        with self._connection():
            envelope = media.ingest_and_publish(
                envelope_json, rt.bus, adapters, store, signer, env=rt.settings.env,
                max_bytes=rt.settings.media_max_bytes,
                final_attempt=task is None or not task.retries)
        return envelope.id

    def _prune_media(self) -> int:
        settings = self.runtime.settings
        return len(media.prune(self.media[0], settings.env, settings.media_retention_days))
