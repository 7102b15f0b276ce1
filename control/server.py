"""``hermes serve``: the control plane, its workers and the local agents in one process.

Threads: the HTTP server (waitress, main thread), the Huey consumer (provisioning and reply
tasks), the delivery worker; plus the ``LocalProvisioner``'s supervisor and its agent
processes.  SIGINT/SIGTERM stop everything in reverse order and leave no agent behind.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from control import create_app
from control.runtime import Runtime
from control.services import mail
from control.services.delivery import DeliveryWorker, consumer_name, in_shard
from control.services.provisioning import ready_tenant_ids
from control.settings import Settings

if TYPE_CHECKING:
    from waitress.server import BaseWSGIServer, MultiSocketServer

log = logging.getLogger(__name__)


class Server:
    """Everything ``hermes serve`` runs, startable and stoppable from code (tests, ``hermes demo``).

    Args:
        settings: the configuration.
        host: interface for the HTTP server.
        upgrade_schema: apply pending database migrations at start (embedded ``hermes serve``);
            ``hermes worker`` passes False and requires ``hermes db upgrade`` to have run.
    """

    def __init__(self, settings: Settings, host: str = "127.0.0.1", upgrade_schema: bool = True):
        self.settings = settings
        self.runtime = Runtime(settings, upgrade_schema=upgrade_schema)
        self.app = create_app(settings, self.runtime)
        self.host = host
        self.stopping = threading.Event()
        self._consumer: Any = None  # huey.consumer.Consumer (huey has no type hints)
        self._provision_consumer: Any = None  # the provisioning queue's (issue 22)
        self._http: MultiSocketServer | BaseWSGIServer | None = None

    def start_workers(self, huey_workers: int = 2) -> None:
        """Adopt existing local agents, start the Huey consumers and the delivery worker.

        Args:
            huey_workers: worker threads of the main queue; provisioning has its own queue and
                ``HERMES_PROVISION_WORKERS`` threads (``control.tasks.PROVISION_QUEUE``).
        """
        rt = self.runtime
        adopt = getattr(rt.provisioner, "adopt", None)
        if adopt is not None:
            adopted = adopt()
            if adopted:
                log.info("restarted agents for tenants %s", ", ".join(adopted))
        # Huey's scheduler enqueues each periodic task once per consumer that has one: with several
        # `hermes worker`s (HERMES_DELIVERY_SHARD), only shard 0's schedules them.
        periodic = self.settings.delivery_shard[0] == 0
        self._consumer = rt.huey.create_consumer(workers=huey_workers, worker_type="thread",
                                                 periodic=periodic, max_delay=0.5,
                                                 check_worker_health=False)
        self._consumer.start()
        rt.workers["huey"] = self._consumer.scheduler
        # The provisioning queue's own threads (issue 22): each waits on a `pulumi up`.
        self._provision_consumer = rt.provision_huey.create_consumer(
            workers=self.settings.provision_workers, worker_type="thread", periodic=False,
            max_delay=0.5, check_worker_health=False)
        self._provision_consumer.start()

        shard = self.settings.delivery_shard

        def tenants():
            with rt.db.connection_context():
                return [t for t in ready_tenant_ids() if in_shard(t, shard)]

        delivery = DeliveryWorker(rt.bus, rt.tasks.adapters, tenants,
                                  edit_interval=self.settings.edit_interval, consumer=consumer_name(),
                                  on_ready=rt.tasks.agent_ready, send_notice=rt.tasks.send_notice,
                                  on_jobs_ended=rt.tasks.queue_job_callbacks,
                                  concurrency=self.settings.delivery_concurrency)

        def run_delivery():
            with rt.db.connection_context():
                delivery.run(self.stopping)

        thread = threading.Thread(target=run_delivery, name="delivery", daemon=True)
        thread.start()
        rt.workers["delivery"] = thread

    def serve_forever(self) -> None:
        """Start the workers and serve HTTP until SIGINT/SIGTERM; then stop everything."""
        from waitress.server import create_server

        self.start_workers()
        if not self.settings.smtp_url:
            self._start_mail_console()
        # Installed after the Huey consumer, which sets handlers of its own.
        signal.signal(signal.SIGTERM, self._interrupt)
        signal.signal(signal.SIGINT, self._interrupt)
        # Start-up objects never die: move them out of the collector's view so full collections
        # stay short (https://docs.python.org/3/library/gc.html#gc.freeze).
        gc.collect()
        gc.freeze()
        self._http = create_server(self.app, host=self.host, port=self.settings.port, threads=8)
        log.info("Hermes Max control plane on http://%s:%s", self.host, self.settings.port)
        try:
            self._http.run()
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def _start_mail_console(self) -> None:
        """Local mode without SMTP_URL: print each outbox mail (a reset link, a payment notice)
        to this console once a second, so a local user can read it."""
        import sys

        rt = self.runtime

        def run_console():
            while not self.stopping.wait(1.0):
                try:
                    with rt.db.connection_context():
                        mail.print_pending(sys.stdout, as_log=rt.settings.log_format == "json")
                except Exception:  # a database hiccup must not end the loop for good
                    log.exception("printing outbox mail failed")

        thread = threading.Thread(target=run_console, name="mail-console", daemon=True)
        thread.start()
        rt.workers["mail"] = thread

    def work_forever(self, huey_workers: int = 4) -> None:
        """Run only the workers (no HTTP) until SIGINT/SIGTERM: ``hermes worker``, used in
        production where gunicorn serves ``control:create_app()``."""
        self.start_workers(huey_workers)
        signal.signal(signal.SIGTERM, self._interrupt)
        signal.signal(signal.SIGINT, self._interrupt)
        log.info("Hermes Max workers running")
        try:
            while not self.stopping.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def _interrupt(self, *_args) -> None:
        raise KeyboardInterrupt

    def shutdown(self) -> None:
        """Stop HTTP, workers and agents (idempotent)."""
        if self.stopping.is_set():
            return
        log.info("shutting down")
        self.stopping.set()
        if self._http is not None:
            self._http.close()
        if self._consumer is not None:
            self._consumer.stop(graceful=False)
        if self._provision_consumer is not None:
            self._provision_consumer.stop(graceful=False)
        for name in ("delivery", "mail"):
            thread = self.runtime.workers.get(name)
            if thread is not None:
                thread.join(timeout=5)
        self.runtime.close()
        log.info("stopped")
