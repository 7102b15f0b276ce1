"""A warm-pool server's bootstrap (issue 22): wait to be claimed, fetch the tenant config once.

    python -m agent.pool_boot --control-url URL --token-file PATH (--write-env PATH | --exec)

A pool server boots with no tenant: its boot config holds only the control plane's URL as
agents reach it (``HERMES_AGENT_CONTROL_URL``) and a one-time pool token in a file only root
(or, locally, the control plane's user) can read.  This polls ``GET {control}/api/pool/config``
with the token as bearer: ``204`` means not claimed yet (poll again after ``--interval``
seconds), ``200`` carries ``{"env": {VAR: value}, "files": {path: text}}`` exactly once (the
control plane erases its copy), ``401``/``404`` mean the token is unknown or spent (exit 1:
the control plane retires such a server).  Then:

* ``--write-env PATH`` (a VM): writes each file (0644: CA certificates), the env file (0600,
  systemd ``EnvironmentFile=`` syntax, systemd.exec(5)) and exits 0; cloud-init's next
  ``runcmd`` starts the agent's units;
* ``--exec`` (the local provisioner): replaces itself with ``python -m agent.main run`` under
  that environment, its data dir the working directory (the provisioner moved the pool slot's
  directory to the tenant's before handing the config out).

The token file is deleted once the config arrived.  Network errors and 5xx answers are retried
forever: an unclaimed server has nothing better to do.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger("agent.pool_boot")

CONFIG_PATH = "/api/pool/config"
#: Seconds for one poll's connect and read.
TIMEOUT = 10.0


class PoolTokenRefused(Exception):
    """The control plane refused the pool token (unknown, or its config was fetched already)."""


def fetch(control_url: str, token: str, interval: float, client: httpx.Client) -> dict:
    """Poll until the server is claimed; return ``{"env": {...}, "files": {...}}``.

    Raises:
        PoolTokenRefused: 401 or 404 (never retried).
    """
    url = control_url.rstrip("/") + CONFIG_PATH
    while True:
        try:
            answer = client.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            log.warning("pool config poll failed: %s", exc)
        else:
            if answer.status_code == 200:
                body = answer.json()
                if not isinstance(body.get("env"), dict):
                    raise PoolTokenRefused("the control plane's answer has no env")
                return body
            if answer.status_code in (401, 404):
                raise PoolTokenRefused(f"{answer.status_code}: {answer.text[:200]}")
            if answer.status_code != 204:
                log.warning("pool config poll answered %s", answer.status_code)
        time.sleep(interval)


def env_line(name: str, value: str) -> str:
    """One ``NAME="value"`` line of a systemd ``EnvironmentFile=`` (backslash escapes for ``\\``,
    ``"``, ``$`` and backquote).

    Raises:
        ValueError: the name is not a variable name, or the value holds a newline or NUL.
    """
    if not name.replace("_", "A").isalnum() or not name[:1].isalpha():
        raise ValueError(f"bad variable name {name!r}")
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{name}'s value holds a line break or NUL")
    escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
    return f'{name}="{escaped}"'


def write_config(config: dict, env_path: Path) -> None:
    """Write ``config``'s files (0644) and its env file (0600, never readable by others)."""
    for path, text in (config.get("files") or {}).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        os.chmod(path, 0o644)
    lines = "".join(env_line(k, str(v)) + "\n" for k, v in config["env"].items())
    env_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the bootstrap; returns the exit status (``--exec`` does not return on success)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control-url", required=True)
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write-env", type=Path, help="env file to write (a VM)")
    mode.add_argument("--exec", action="store_true", help="exec the agent (local provisioner)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token = args.token_file.read_text().strip()
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            config = fetch(args.control_url, token, args.interval, client)
    except PoolTokenRefused as exc:
        log.error("pool token refused: %s", exc)
        return 1
    args.token_file.unlink(missing_ok=True)
    log.info("claimed by tenant %s", config["env"].get("HERMES_TENANT", "?"))
    if args.exec:
        env = {**os.environ, **{k: str(v) for k, v in config["env"].items()},
               "HERMES_DATA_DIR": os.getcwd()}
        os.execve(sys.executable, [sys.executable, "-m", "agent.main", "run"], env)
    write_config(config, args.write_env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
