"""The ``hermes`` system user, its directories and the agent's virtualenv with our wheel."""

import shlex
from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files, pip, server
from pyinfra.operations.util import any_changed

from agent_image.image_settings import ImageSettings


@deploy("Create the hermes user and directories")
def create_user_and_dirs(settings: ImageSettings) -> None:
    """System user without login; config dir readable by the agent only; data dir owned by it."""
    server.user(
        name="Create the hermes system user",
        user=settings.hermes_user,
        system=True,
        home=settings.hermes_data_dir,
        shell="/usr/sbin/nologin",
        ensure_home=False,
    )
    files.directory(
        name="Create the install prefix",
        path=settings.hermes_prefix,
        user="root",
        group="root",
        mode="755",
    )
    files.directory(
        name="Create the config directory",
        path=settings.hermes_config_dir,
        user="root",
        group=settings.hermes_user,
        mode="750",
    )
    files.directory(
        name="Create the data directory",
        path=settings.hermes_data_dir,
        user=settings.hermes_user,
        group=settings.hermes_user,
        mode="750",
    )


def pip_install_commands(settings: ImageSettings, wheel_path: str, lock_path: str) -> list[str]:
    """Shell commands that install the uploaded lock, then the uploaded wheel, into the venv.

    First the lock (``lock_path`` on the target; exact versions with hashes from
    ``make lock``) with ``--require-hashes --no-deps``: the image gets exactly the tested
    versions, never whatever a range resolves to on build day (issue 18: sentry-sdk 3.0).
    Then the project alone, ``--no-deps`` and forced, so a rebuilt wheel with an
    unchanged version number still replaces the installed code.
    """
    pip = [f"{settings.venv}/bin/pip", "install", "--no-input", "--disable-pip-version-check",
           "--no-cache-dir", *shlex.split(settings.hermes_pip_install_args)]
    lock = [*pip, "--require-hashes", "--no-deps", "-r", lock_path]
    project = [*pip, "--force-reinstall", "--no-deps", wheel_path]
    return [" ".join(shlex.quote(part) for part in argv) for argv in (lock, project)]


@deploy("Install the agent into its virtualenv")
def install_agent(settings: ImageSettings) -> None:
    """Create ``<prefix>/venv`` and install the lock of the wheel's extras, then the wheel.

    Both are uploaded to ``<prefix>/dist``; pip runs only when the venv was just created or
    the wheel or the lock changed, so a second run of the deploy reports no changes.
    """
    venv = pip.venv(
        name="Create the agent virtualenv",
        path=settings.venv,
        python=settings.hermes_python,
    )
    dist_dir = f"{settings.hermes_prefix}/dist"
    files.directory(name="Create the wheel directory", path=dist_dir, mode="755")
    wheel_path = f"{dist_dir}/{settings.wheel_name}"
    upload = files.put(
        name="Upload the project wheel",
        src=settings.hermes_wheel,
        dest=wheel_path,
        mode="644",
    )
    lock_path = f"{dist_dir}/{Path(settings.lock).name}"
    lock = files.put(
        name="Upload the lock of the agent's dependencies",
        src=settings.lock,
        dest=lock_path,
        mode="644",
    )
    server.shell(
        name="pip install the lock and the wheel",
        commands=pip_install_commands(settings, wheel_path, lock_path),
        _if=any_changed(venv, upload, lock),
    )
