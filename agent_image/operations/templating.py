"""Where the deploy's Jinja2 templates live."""

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def template_path(name: str) -> str:
    """Absolute path (str) of ``agent_image/templates/<name>``; pyinfra reads it locally."""
    return str(TEMPLATES_DIR / name)
