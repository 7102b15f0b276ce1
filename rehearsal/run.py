"""The rehearsal scenario: the production path on this machine, printed as a transcript.

Steps (DESIGN.md, "The production path, rehearsed"):

1. the snapshot: the image built by the real pyinfra deploy (``rehearsal.image``);
2. Redis from the ``redis`` role's rendered files (TLS + ACL), on free ports;
3. the control host's environment and units rendered by the ``control`` role; the control
   plane started from them (gunicorn ``control:create_app()`` and ``hermes worker``) on a
   fresh Postgres database, schema upgraded first;
4. a signed Stripe checkout → ``HetznerProvisioner`` → the real tenant program under the
   rehearsal engine → the hcloud stand-in boots the server: the tenant's real cloud-init in
   an overlay of the snapshot, the image's own units in a chroot;
5. the user links Telegram and gets a streamed reply from the Anthropic stand-in; an upgrade
   resizes the server; a cancellation archives to moto's S3 and deletes the server.

Replaced here, and said so in the transcript: the internet's edge (``standins/``), the Pulumi
engine (``rehearsal.engine``), the SSH transport of the archive step (``rehearsal.ssh_standin``)
and systemd (``rehearsal.units``: ExecStart, Environment, EnvironmentFile, User,
WorkingDirectory only).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.fernet import Fernet

from control.models import MachineState
from rehearsal import roles, services
from rehearsal.units import parse_environment_file, read_unit

if TYPE_CHECKING:
    from rehearsal.vm import ChrootMachines

EMAIL = "grace@example.com"
CHAT_ID = 515151
QUESTION = "Hi Hermes! Are you running on your own server?"
REPLY = ("Yes: I run on a server of my own, booted from the Hermes snapshot, and I answer "
         "you through the Telegram bot. (Anthropic stand-in, rehearsal)")
FIREWALL_LABEL = "hermes-firewall=rehearsal-tenant"
NETWORK_ID = 7
ENV_NAME = "rehearsal"
SERVER_TYPES = {"light": "cx23", "heavy": "cx33"}
HOOK_DIR = Path(__file__).resolve().parent / "hook"
# What Telegram and Stripe would call through nginx; the Telegram stand-in, like Telegram,
# accepts only an HTTPS webhook URL on 443, 80, 88 or 8443.
PUBLIC_URL = "https://hermes-rehearsal.example"


class RehearsalFailed(RuntimeError):
    """A step of the rehearsal did not reach its expected outcome."""


@dataclass
class Transcript:
    """Timestamped lines, printed as they happen (like ``hermes demo``)."""

    echo: Callable[[str], object] = print
    t0: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)

    def say(self, who: str, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.2f}s] {who:<9} {text}"
        self.lines.append(line)
        self.echo(line)


class Rehearsal:
    """One rehearsal run in a temporary directory; ``run()`` raises ``RehearsalFailed`` or
    ``services.ServiceError`` on the first step that does not complete in time."""

    def __init__(self, transcript: Transcript, timeout: float = 180.0, keep: bool = False):
        self.t = transcript
        self.timeout = timeout
        self.keep = keep
        self.work = Path(tempfile.mkdtemp(prefix="hermes-rehearsal-"))
        self.processes = services.Processes(self.work / "logs")
        self.stripe_secret = "whsec_" + secrets.token_hex(16)
        self.telegram_secret = secrets.token_urlsafe(24)
        self.control_env: dict[str, str] = {}
        self.process_env: dict[str, str] = {}
        self.machines: ChrootMachines | None = None

    # -- the whole run ----------------------------------------------------------------------
    def run(self) -> dict:
        """Run every step; return the measured numbers (seconds) and identifiers."""
        from rehearsal.image import use_snapshot
        from rehearsal.vm import ChrootMachines
        from standins.anthropic_api import AnthropicStandin, text_reply
        from standins.hcloud_api import HcloudStandin
        from standins.telegram_bot_api import TelegramBotApiStandin

        results: dict = {}
        with ExitStack() as stack:
            stack.callback(self.processes.stop_all)
            snapshot = stack.enter_context(use_snapshot())
            self.t.say("image", f"snapshot built by the pyinfra deploy (@chroot) in "
                                f"{snapshot.seconds:.1f}s ({'fresh' if snapshot.fresh else 'cached venv'}"
                                f", wheel {snapshot.wheel.name}): {snapshot.root}")
            results["image_seconds"] = snapshot.seconds
            telegram = stack.enter_context(TelegramBotApiStandin())
            anthropic = AnthropicStandin(
                responder=lambda request: text_reply(REPLY, chunk=12, chunk_delay=0.1))
            anthropic.start()
            stack.callback(anthropic.stop)
            redis_info = self.start_redis()
            machines = ChrootMachines(snapshot.root, self.work / "servers")
            self.machines = machines
            stack.callback(machines.shutdown)
            hcloud = HcloudStandin(token=secrets.token_hex(16), machines=machines).start()
            stack.callback(hcloud.stop)
            image = hcloud.add_image("hermes-base (rehearsal snapshot)",
                                     {"app": "hermes", "role": "base-image"})
            s3 = services.start_moto(self.processes, "hermes-archive-rehearsal")
            self.t.say("edge", f"stand-ins up: Telegram {telegram.base_url}, Anthropic "
                               f"{anthropic.base_url}, hcloud {hcloud.url}, S3 (moto) "
                               f"{s3['endpoint']}")
            database = services.PostgresDatabase()
            database.create()
            stack.callback(database.drop)
            # Runs first on the way out: the control plane stops before its database goes.
            stack.callback(self.processes.stop_all)
            self.start_control(redis_info, telegram, anthropic, hcloud, image, s3, database)
            results.update(self.scenario(telegram, anthropic, hcloud, machines, s3, database))
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return results

    # -- step 2: Redis from the role ----------------------------------------------------------
    def start_redis(self) -> dict:
        base = self.work / "redis"
        tls = roles.issue_tls(base / "tls")
        password = secrets.token_urlsafe(24)
        port = services.free_port()
        variables: dict[str, Any] = {
            "redis_manage_packages": False, "redis_manage_repository": False,
            "redis_manage_service": False, "redis_verify": False,
            "redis_conf_path": str(base / "etc/redis.conf"),
            "redis_acl_file": str(base / "etc/users.acl"),
            "redis_data_dir": str(base / "data"), "redis_pid_file": str(base / "redis.pid"),
            "redis_bind_address": "127.0.0.1", "redis_tls_port": port,
            "redis_tls_cert_file": str(tls["cert"]), "redis_tls_key_file": str(tls["key"]),
            "redis_tls_ca_cert_file": str(tls["ca"]), "redis_acl_admin_password": password,
        }
        run = roles.apply_role("redis", variables, self.work / "ansible-redis")
        conf = Path(variables["redis_conf_path"])
        rendered = roles.rendered_redis_settings(conf)
        tls_port = rendered.get("tls-port")
        plain_port = rendered.get("port", "0")
        ca = Path(rendered.get("tls-ca-cert-file") or tls["ca"])
        admin = variables.get("redis_acl_admin_user", "hermes-control")
        if tls_port and tls_port != "0":
            url = f"rediss://{admin}:{password}@127.0.0.1:{tls_port}/0"
        else:
            url = f"redis://{admin}:{password}@127.0.0.1:{plain_port}/0"
        services.start_redis(self.processes, conf, url, ca)
        self.t.say("redis", f"roles/redis applied ({run.changed} changed); redis-server on "
                            f"{'TLS' if url.startswith('rediss') else 'PLAIN'} port "
                            f"{tls_port or plain_port}, ACL file, maxmemory-policy "
                            f"{rendered.get('maxmemory-policy')}, default user off: "
                            f"{'user default off' in (base / 'etc/users.acl').read_text()}")
        return {"url": url, "ca": ca, "conf": conf}

    # -- step 3: control plane from the role ----------------------------------------------------
    def start_control(self, redis_info, telegram, anthropic, hcloud, image, s3, database):
        base = self.work / "control"
        port = services.free_port()
        self.local_url = f"http://127.0.0.1:{port}"
        environment = {
            "HERMES_ENV": ENV_NAME, "HERMES_PORT": str(port),
            # Edits every 0.2 s (default 1 s) so the short stand-in stream shows as edits.
            "HERMES_EDIT_INTERVAL": "0.2",
            "HERMES_PUBLIC_URL": PUBLIC_URL, "DATABASE_URL": database.url,
            # No nginx here: agents reach gunicorn directly (the LLM gateway, the MCP proxy).
            "HERMES_AGENT_CONTROL_URL": self.local_url,
            "HERMES_BUS": "redis", "REDIS_URL": redis_info["url"],
            "HERMES_BUS_CA_FILE": str(redis_info["ca"]),
            "STRIPE_WEBHOOK_SECRET": self.stripe_secret,
            "HERMES_SECRET_KEY": secrets.token_urlsafe(48),
            "HERMES_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            # No grace period: the cancellation pauses, `hermes machines end-grace` archives.
            "HERMES_GRACE_DAYS": "0",
            "TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_WEBHOOK_SECRET": self.telegram_secret,
            "TELEGRAM_API_BASE": telegram.base_url, "TELEGRAM_BOT_USERNAME": telegram.username,
            "HERMES_PROVISIONER": "hetzner", "HCLOUD_TOKEN": hcloud.token,
            "HCLOUD_ENDPOINT": hcloud.url, "HETZNER_LOCATION": "nbg1",
            "HETZNER_SNAPSHOT_ID": str(image["id"]), "HETZNER_NETWORK_ID": str(NETWORK_ID),
            "HETZNER_FIREWALL_LABEL": FIREWALL_LABEL,
            "HETZNER_SERVER_TYPES": ",".join(f"{k}={v}" for k, v in SERVER_TYPES.items()),
            "PULUMI_BACKEND_URL": f"file://{base / 'pulumi-state'}",
            "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(16),
            "ARCHIVE_S3_ENDPOINT": s3["endpoint"], "ARCHIVE_BUCKET": s3["bucket"],
            "ARCHIVE_ACCESS_KEY": s3["access_key"], "ARCHIVE_SECRET_KEY": s3["secret_key"],
            "ARCHIVE_REGION": s3["region"],
            "HERMES_LLM": "anthropic", "HERMES_LLM_CHAIN": "anthropic",
            "ANTHROPIC_API_KEY": "sk-ant-rehearsal-" + secrets.token_hex(8),
            "ANTHROPIC_BASE_URL": anthropic.base_url,
        }
        variables = {
            "control_manage_packages": False, "control_manage_service": False,
            "control_verify": False, "control_acme_enabled": False, "control_venv": sys.prefix,
            "control_config_dir": str(base / "etc"), "control_data_dir": str(base / "data"),
            "control_unit_dir": str(base / "units"),
            "control_nginx_site_path": str(base / "nginx/sites-available/hermes-control.conf"),
            "control_nginx_enabled_path": str(base / "nginx/sites-enabled/hermes-control.conf"),
            "control_workers": 2, **roles.control_setting_variables(environment),
        }
        run = roles.apply_role("control", variables, self.work / "ansible-control")
        self.control_env = parse_environment_file((base / "etc/control.env").read_text())
        missing = sorted(k for k in environment if k not in self.control_env)
        if missing:
            raise RehearsalFailed(f"roles/control's env file lacks {missing}")
        self.process_env = services.unit_process_env(self.control_env, {
            # The rehearsal's two replacements inside the control plane (rehearsal.hook_install).
            "PYTHONPATH": str(HOOK_DIR), "HERMES_REHEARSAL_ENGINE": "mock",
            "HERMES_REHEARSAL_SSH": str(self._ssh_wrapper()),
            "HERMES_REHEARSAL_SERVERS": str(self.work / "servers"),
        })
        self.t.say("control", f"roles/control applied ({run.changed} changed); control.env has "
                              f"{len(self.control_env)} settings; database {database.name}; "
                              f"Telegram webhook: {telegram.webhook['url'] or 'not registered'}")
        self.upgrade_schema()
        web = read_unit(base / "units/hermes-control.service")
        worker = read_unit(base / "units/hermes-control-huey.service")
        services.start_unit(self.processes, web, self.process_env)
        services.start_unit(self.processes, worker, self.process_env)
        # nginx (TLS, PUBLIC_URL) is not run here: requests go to gunicorn directly.
        self.http = httpx.Client(base_url=self.local_url, timeout=30)

        def healthy():
            self.processes.check()
            try:
                return self.http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        services.wait_for(healthy, 60, "gunicorn to answer /healthz")
        worker_cmd = " ".join([Path(worker.argv[0]).name, *worker.argv[1:]])
        self.t.say("control", f"gunicorn ({' '.join(web.argv[1:3])} ... "
                              f"'{web.argv[-1]}') and `{worker_cmd}` "
                              f"started from the role's units; /healthz 200")

    def upgrade_schema(self) -> None:
        """``hermes db upgrade`` with the control env, as a deploy runs it before the units."""
        hermes = str(Path(sys.executable).parent / "hermes")
        result = subprocess.run([hermes, "db", "upgrade"], env=self.process_env,
                                capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RehearsalFailed(f"hermes db upgrade failed: {result.stderr[-2000:]}")
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        self.t.say("control", f"hermes db upgrade: {last}")

    def _ssh_wrapper(self) -> Path:
        path = self.work / "bin/ssh"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom rehearsal.ssh_standin import main\n"
                        "sys.exit(main(sys.argv[1:]))\n")
        path.chmod(0o755)
        return path

    # -- steps 4 and 5 ------------------------------------------------------------------------
    def scenario(self, telegram, anthropic, hcloud, machines, s3, database) -> dict:
        from standins import stripe_events
        from standins.telegram_updates import text_update

        results = {}
        self.post_stripe(stripe_events.subscription_created(
            customer="cus_rehearsal", subscription="sub_rehearsal", plan="light",
            event_id="evt_rehearsal_sub"))
        paid = time.monotonic()
        self.post_stripe(stripe_events.checkout_completed(
            email=EMAIL, customer="cus_rehearsal", subscription="sub_rehearsal",
            event_id="evt_rehearsal_checkout"))
        self.t.say("stripe", f"signed checkout.session.completed ({EMAIL}, plan light) accepted")
        self.wait_machine(database, MachineState.READY, "light")
        results["payment_to_ready_seconds"] = time.monotonic() - paid
        server = self.only_server(hcloud)
        results["server_id"] = server["id"]
        units = services.wait_for(lambda: self.units_up(machines, server["id"]), self.timeout,
                                  "the agent units to run in the server")
        boot = machines.machines[server["id"]]
        self.t.say("hermes", f"machine ready {results['payment_to_ready_seconds']:.2f}s after "
                             f"payment (payment -> ready)")
        self.t.say("hcloud", f"server {server['id']} {server['name']} type "
                             f"{server['server_type']['name']} labels {server['labels']}")
        self.t.say("vm", f"cloud-init applied; units {sorted(units)} running in the chroot "
                         f"(pids {sorted(units.values())}); bus CA: {boot.ca_source}; "
                         f"{self.env_file_mode(boot.root)}")
        token = self.link_token()
        self.post_telegram(text_update(1, CHAT_ID, f"/start {token}"))
        self.t.say("user", f"/start {token[:6]}...")
        linked = services.wait_for(lambda: self.bot_says(telegram, "Linked"), self.timeout,
                                   "the link confirmation in Telegram")
        self.t.say("bot", linked)
        before = len(telegram.calls)
        asked = time.monotonic()
        self.post_telegram(text_update(2, CHAT_ID, QUESTION))
        self.t.say("user", QUESTION)
        reply = services.wait_for(lambda: self.bot_says(telegram, REPLY[:40], full=REPLY),
                                  self.timeout, "the agent's streamed reply in Telegram")
        calls = [c.method for c in telegram.calls[before:]]
        results["reply_seconds"] = time.monotonic() - asked
        self.t.say("agent", reply)
        self.t.say("hermes", f"reply delivered {results['reply_seconds']:.2f}s after the "
                             f"question ({calls.count('sendMessage')} sendMessage, "
                             f"{calls.count('editMessageText')} editMessageText as it streamed; "
                             f"{len(anthropic.requests)} Anthropic requests)")
        self.post_stripe(stripe_events.subscription_created(
            customer="cus_rehearsal", subscription="sub_rehearsal", plan="heavy",
            event_id="evt_rehearsal_upgrade", event_type="customer.subscription.updated"))
        self.t.say("stripe", "signed customer.subscription.updated (plan heavy) accepted")
        resized = services.wait_for(
            lambda: self.server_type_is(hcloud, server["id"], SERVER_TYPES["heavy"]),
            self.timeout, "the server to be resized")
        units = services.wait_for(lambda: self.units_up(machines, server["id"]), self.timeout,
                                  "the agent units after the resize")
        self.t.say("hcloud", f"server {server['id']} resized to {resized['server_type']['name']}"
                             f" (labels plan={resized['labels'].get('plan')}); units running "
                             f"again (pids {sorted(units.values())})")
        pids = list(units.values())
        self.post_stripe(stripe_events.subscription_created(
            customer="cus_rehearsal", subscription="sub_rehearsal", plan="heavy",
            event_id="evt_rehearsal_cancel", status="canceled",
            event_type="customer.subscription.deleted"))
        self.t.say("stripe", "signed customer.subscription.deleted accepted")
        self.wait_machine(database, MachineState.PAUSED, None)
        services.wait_for(lambda: hcloud.servers[server["id"]]["status"] == "off", self.timeout,
                          "the paused server to be powered off")
        notice = services.wait_for(lambda: self.bot_says(telegram, "Your Hermes subscription has ended"),
                                   self.timeout, "the pause notice in Telegram")
        self.t.say("bot", notice)
        self.t.say("hcloud", f"server {server['id']} powered off (agent paused, data kept; "
                             f"HERMES_GRACE_DAYS=0 here)")
        self.end_grace()
        self.wait_machine(database, MachineState.DEPROVISIONED, None)
        archive = services.wait_for(lambda: self.archive_object(s3), 30, "the archive in S3")
        self.t.say("s3", f"archive s3://{s3['bucket']}/{archive['Key']} "
                         f"({archive['Size']} bytes) holds {self.archive_members(s3, archive)}")
        services.wait_for(lambda: server["id"] not in hcloud.servers, 30, "the server deletion")
        hcloud.wait_for_machines()
        services.wait_for(lambda: not any(_alive(p) for p in machines.started_pids), 30,
                          "every agent process of the run to end")
        self.t.say("hcloud", f"server {server['id']} deleted; agent processes {sorted(pids)} "
                             f"(and all {len(machines.started_pids)} started during the run) gone")
        results["archive_key"] = archive["Key"]
        return results

    # -- helpers -----------------------------------------------------------------------------
    def post_stripe(self, event: dict) -> None:
        from standins.stripe_events import sign

        body = json.dumps(event).encode()
        response = self.http.post("/webhooks/stripe", content=body, headers={
            "Stripe-Signature": sign(body, self.stripe_secret),
            "Content-Type": "application/json"})
        if response.status_code != 200:
            raise RehearsalFailed(f"Stripe webhook answered {response.status_code}: "
                                  f"{response.text[:300]}")

    def post_telegram(self, update: dict) -> None:
        response = self.http.post("/webhooks/telegram", json=update, headers={
            "X-Telegram-Bot-Api-Secret-Token": self.telegram_secret})
        if response.status_code != 200:
            raise RehearsalFailed(f"Telegram webhook answered {response.status_code}: "
                                  f"{response.text[:300]}")

    def wait_machine(self, database, state: MachineState, plan: str | None) -> None:
        last = {}

        def reached():
            self.processes.check()
            rows = database.query(
                "SELECT m.state, m.plan, m.detail FROM machine m JOIN tenant t "
                "ON m.tenant_id = t.id WHERE t.email = %s", EMAIL)
            if rows:
                last["row"] = rows[0]
                if rows[0][0] == MachineState.FAILED:
                    raise RehearsalFailed(f"machine failed: {rows[0][2]}\n"
                                          f"{self.processes.tail('hermes-control-huey')}"
                                          f"{self.server_logs()}")
            return rows and rows[0][0] == state and (plan is None or rows[0][1] == plan)

        try:
            services.wait_for(reached, self.timeout, f"machine state {state}", interval=0.1)
        except services.ServiceError as exc:
            raise RehearsalFailed(f"{exc} (last: {last.get('row')})\nworker log:\n"
                                  f"{self.processes.tail('hermes-control-huey')}"
                                  f"{self.server_logs()}") from exc

    def server_logs(self, lines: int = 40) -> str:
        """The last ``lines`` of every tenant server's cloud-init and unit logs, so a machine
        that never reports ready shows why (its agent's own words)."""
        if self.machines is None:
            return ""
        parts = []
        for server_id, machine in sorted(self.machines.machines.items()):
            if machine.boot_error:
                parts.append(f"server {server_id} boot error: {machine.boot_error}")
            for log in sorted((machine.base / "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"server {server_id} {log.name} (last {len(tail)} lines):\n"
                             + "\n".join(tail))
        return "\n" + "\n".join(parts) if parts else "\n(no tenant server logs)"

    @staticmethod
    def env_file_mode(root: Path) -> str:
        """Owner and mode of the tenant's env file as cloud-init left them."""
        info = (root / "etc/hermes/agent.env").stat()
        return f"/etc/hermes/agent.env uid {info.st_uid} mode {info.st_mode & 0o777:04o}"

    @staticmethod
    def only_server(hcloud) -> dict:
        servers = [s for s in hcloud.servers.values() if s["labels"].get("env") == ENV_NAME]
        if len(servers) != 1:
            raise RehearsalFailed(f"expected one tenant server, found {len(servers)}")
        return servers[0]

    @staticmethod
    def units_up(machines, server_id: int) -> dict[str, int] | None:
        machine = machines.machines.get(server_id)
        if machine is not None and machine.boot_error:
            raise RehearsalFailed(f"server {server_id} failed to boot: {machine.boot_error}")
        units = machines.running_units(server_id)
        return units if len(units) == 2 else None

    def end_grace(self) -> None:
        hermes = str(Path(sys.executable).parent / "hermes")
        result = subprocess.run([hermes, "machines", "end-grace"], env=self.process_env,
                                capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise RehearsalFailed(f"hermes machines end-grace failed: {result.stdout[-500:]}"
                                  f"{result.stderr[-1500:]}")
        self.t.say("operator", f"hermes machines end-grace -> {result.stdout.strip()}")

    def link_token(self) -> str:
        hermes = str(Path(sys.executable).parent / "hermes")
        result = subprocess.run([hermes, "tenants", "link-token", EMAIL], env=self.process_env,
                                capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0 or "token:" not in result.stdout:
            raise RehearsalFailed(f"hermes tenants link-token failed: {result.stderr[-1000:]}")
        self.t.say("operator", "hermes tenants link-token " + EMAIL + " -> token issued")
        return result.stdout.split("token:", 1)[1].split()[0]

    @staticmethod
    def bot_says(telegram, prefix: str, full: str | None = None) -> str | None:
        for message in telegram.chat_messages(CHAT_ID):
            if message.text.startswith(prefix) and (full is None or message.text == full):
                return message.text
        return None

    @staticmethod
    def server_type_is(hcloud, server_id: int, name: str) -> dict | None:
        server = hcloud.servers.get(server_id)
        if server and server["server_type"]["name"] == name and server["status"] == "running":
            return server
        return None

    @staticmethod
    def archive_object(s3) -> dict | None:
        listing = services.s3_client(s3).list_objects_v2(Bucket=s3["bucket"])
        archives = [o for o in listing.get("Contents", [])
                    if not o["Key"].endswith(".manifest.json")]
        return archives[0] if archives else None

    @staticmethod
    def archive_members(s3, archive: dict) -> str:
        import io
        import tarfile

        body = services.s3_client(s3).get_object(Bucket=s3["bucket"], Key=archive["Key"])
        with tarfile.open(fileobj=io.BytesIO(body["Body"].read()), mode="r:*") as tar:
            names = [n.removeprefix("./") for n in tar.getnames() if n not in (".", "./")]
        top = sorted({n.split("/", 1)[0] for n in names})
        return f"{len(names)} entries of /var/lib/hermes (top level: {', '.join(top)})"


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (``/proc/<pid>/stat`` state ``Z``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def main(timeout: float = 180.0, keep: bool = False, echo=print) -> int:
    """Run the rehearsal, print the transcript; return 0 on success, 1 on failure."""
    transcript = Transcript(echo=echo)
    rehearsal = Rehearsal(transcript, timeout=timeout, keep=keep)
    transcript.say("hermes", f"rehearsal in {rehearsal.work}")
    try:
        results = rehearsal.run()
    except Exception as exc:  # noqa: BLE001 - every failure ends the run with its reason
        transcript.say("FAILED", f"{type(exc).__name__}: {exc}")
        transcript.say("hermes", f"logs kept in {rehearsal.work / 'logs'}")
        return 1
    transcript.say("hermes", "not exercised here: the Pulumi engine (rehearsal engine runs the "
                             "real program under Pulumi mocks), real SSH (chroot transport), "
                             "real Hetzner (hcloud stand-in), systemd sandboxing and limits")
    transcript.say("hermes", "rehearsal passed: " + json.dumps(
        {k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}))
    return 0
