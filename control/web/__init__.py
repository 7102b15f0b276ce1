"""Flask blueprints: parse the request, call one service, render JSON."""

from flask import current_app


def runtime():
    """Return the ``control.runtime.Runtime`` of the current app."""
    return current_app.extensions["hermes"]
