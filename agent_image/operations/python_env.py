"""The ``hermes`` system user, its directories and the agent's virtualenv with our wheel."""

import shlex

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


def pip_install_commands(settings: ImageSettings, wheel_path: str) -> list[str]:
    """Shell commands that install ``wheel_path`` with its extras into the venv.

    First a normal install with ``settings.wheel_extras`` (the ``agent`` extra plus what the
    declared LLM backends need, e.g. ``local-llm`` for ``local``; pulls their dependencies),
    then a forced ``--no-deps`` reinstall of the project alone, so a rebuilt wheel with an
    unchanged version number still replaces the installed code without reinstalling every
    dependency.
    """
    pip = [f"{settings.venv}/bin/pip", "install", "--no-input", "--disable-pip-version-check",
           "--no-cache-dir", *shlex.split(settings.hermes_pip_install_args)]
    requirement = wheel_path
    if settings.wheel_extras:
        requirement = f"{wheel_path}[{','.join(settings.wheel_extras)}]"
    install = [*pip, requirement]
    refresh = [*pip, "--force-reinstall", "--no-deps", wheel_path]
    return [" ".join(shlex.quote(part) for part in argv) for argv in (install, refresh)]


@deploy("Install the agent into its virtualenv")
def install_agent(settings: ImageSettings) -> None:
    """Create ``<prefix>/venv`` and install the uploaded wheel with its extras.

    pip runs only when the venv was just created or the wheel changed, so a second
    run of the deploy reports no changes.
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
    server.shell(
        name="pip install the wheel",
        commands=pip_install_commands(settings, wheel_path),
        _if=any_changed(venv, upload),
    )
