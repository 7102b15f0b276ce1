"""``hermes image build``: build the agent base snapshot on Hetzner and print its id.

The API token comes from ``--hcloud-token`` or ``$HCLOUD_TOKEN`` (the variable the hcloud CLI,
Pulumi's hcloud provider and Ansible's hcloud modules read too).
"""

from __future__ import annotations

import subprocess

import click

from agent_image.build import ImageBuildConfig, ImageBuildError, build_image
from infra.hetzner_api import make_client


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hermes-max")
    except PackageNotFoundError:
        return "0.0.0"


@click.group()
def image():
    """Build the agent base image (a Hetzner snapshot)."""


@image.command()
@click.option("--wheel", "wheel_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Project wheel to install (pip wheel . --no-deps -w dist).")
@click.option("--ssh-key", "ssh_key_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Private key matching --ssh-key-name.")
@click.option("--ssh-key-name", "ssh_key_names", multiple=True, required=True,
              help="Hetzner SSH key name(s) to put on the temporary server.")
@click.option("--hcloud-token", envvar="HCLOUD_TOKEN", show_envvar=True, required=True,
              help="Hetzner Cloud API token (read+write).")
@click.option("--hcloud-endpoint", default="https://api.hetzner.cloud/v1", show_default=True)
@click.option("--location", default="nbg1", show_default=True)
@click.option("--server-type", default="cx23", show_default=True,
              help="Type of the temporary build server.")
@click.option("--version", "version", default=None, help="Image version (default: the package's).")
@click.option("--git-sha", default=None, help="Commit of the wheel (default: git rev-parse HEAD).")
@click.option("--embedder-dir", default=None, type=click.Path(file_okay=False),
              help="The exported embedding model to ship, exported there first when missing "
                   "(default: ~/.cache/hermes/all-MiniLM-L6-v2-onnx).")
def build(wheel_path, ssh_key_path, ssh_key_names, hcloud_token, hcloud_endpoint, location,
          server_type, version, git_sha, embedder_dir):
    """Export the embedding model -> temporary server -> pyinfra deploy -> power off ->
    snapshot -> delete; print the id."""
    from hcloud import APIException

    from agent.memory.onnx_export import export
    from wire.embedder_export import EmbedderExportError, default_dir

    try:
        embedder = export(embedder_dir or default_dir())
    except EmbedderExportError as err:
        raise click.ClickException(str(err)) from err
    config = ImageBuildConfig(
        version=version or _version(), git_sha=git_sha or _git_sha(), wheel_path=wheel_path,
        ssh_key_path=ssh_key_path, ssh_key_names=tuple(ssh_key_names), location=location,
        server_type=server_type, embedder_dir=str(embedder),
    )
    try:
        result = build_image(make_client(hcloud_token, hcloud_endpoint), config)
    except (ImageBuildError, APIException) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"snapshot {result.snapshot_id}: {result.description}", err=True)
    click.echo("pin it:  pulumi config set snapshotId "
               f"{result.snapshot_id} --stack <env>", err=True)
    click.echo(result.snapshot_id)


@image.command("export-embedder")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Export again even if DIRECTORY holds an export.")
def export_embedder(directory, force):
    """Export the embedding model (all-MiniLM-L6-v2) to ONNX into DIRECTORY.

    DIRECTORY gets model.onnx, tokenizer.json and embedder.json (wire/embedder_export.py): what
    the agent runs with ONNX Runtime, no torch needed. Needs the ``embed-export`` extra; the
    base-image deploy ships the directory to /opt/hermes/embedder (``hermes_embedder_source``).
    """
    from agent.memory.onnx_export import export
    from wire.embedder_export import EmbedderExportError, read_manifest

    try:
        path = export(directory, replace=force)
    except EmbedderExportError as err:
        raise click.ClickException(str(err)) from err
    manifest = read_manifest(path) or {}
    click.echo(f"{path}: {manifest.get('name')} ({manifest.get('dim')} dimensions)")
