"""Operators' SSH public keys as Hetzner SSH keys (installed for root on new servers)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud


@dataclass
class SshKeysArgs:
    """Args of ``SshKeys``.

    Attributes:
        env: environment name (key names ``hermes-<env>-ops-<n>``, label ``env``).
        public_keys: OpenSSH public key lines (``ssh-ed25519 AAAA... comment``).
    """

    env: str
    public_keys: list[str]


class SshKeys(pulumi.ComponentResource):
    """One ``hcloud.SshKey`` per public key.

    Attributes:
        ids: key ids (``Output[str]``), for ``Server.ssh_keys``.
        names: key names, for tenant stacks (``hermes:sshKeyNames``, comma-separated).

    Raises:
        pulumi.RunError: a line is not an OpenSSH public key.
    """

    def __init__(self, name: str, args: SshKeysArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hermes:infra:SshKeys", name, None, opts)
        self.keys: list[hcloud.SshKey] = []
        self.names: list[str] = []
        for index, line in enumerate(args.public_keys):
            if not line.split(maxsplit=1)[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise pulumi.RunError(f"sshPublicKeys[{index}] is not an OpenSSH public key")
            key_name = f"hermes-{args.env}-ops-{index}"
            self.names.append(key_name)
            self.keys.append(
                hcloud.SshKey(
                    f"{name}-{index}",
                    name=key_name,
                    public_key=line.strip(),
                    labels={"app": "hermes", "env": args.env},
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        self.ids = [key.id for key in self.keys]
        self.register_outputs({"names": self.names})
