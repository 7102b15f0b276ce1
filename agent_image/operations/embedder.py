"""The embedding model, exported to ONNX on the build host, shipped into the image.

The tenant VM runs it with ONNX Runtime (``agent/memory/embedders.py``) and so needs no torch;
``hermes image export-embedder DIR`` (torch: the ``embed-export`` extra) writes the directory
this uploads (``hermes_embedder_source``, checked by ``ImageSettings.from_host_data``).
"""

from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files

from agent_image.image_settings import ImageSettings
from wire import embedder_export


@deploy("Ship the exported embedding model")
def install_embedder(settings: ImageSettings) -> None:
    """Upload model.onnx, tokenizer.json and embedder.json to ``settings.embedder_dir``
    (root-owned, world-readable: the agent reads it under ``ProtectSystem=strict``)."""
    source = Path(settings.embedder_source)
    files.directory(
        name="Create the embedding model directory",
        path=settings.embedder_dir,
        user="root",
        group="root",
        mode="755",
    )
    for name in embedder_export.FILES:
        files.put(
            name=f"Upload the embedding model's {name}",
            src=str(source / name),
            dest=f"{settings.embedder_dir}/{name}",
            user="root",
            group="root",
            mode="644",
        )
