"""Loaded by Python at start-up in the rehearsal's control-plane processes only (their
``PYTHONPATH`` starts with this directory); swaps in the rehearsal's Pulumi engine and SSH
transport when ``HERMES_REHEARSAL_ENGINE=mock`` (see ``rehearsal.hook_install``)."""

import os

if os.environ.get("HERMES_REHEARSAL_ENGINE") == "mock":
    from rehearsal.hook_install import install

    install()
