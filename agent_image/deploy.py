"""pyinfra deploy: a fresh Ubuntu 22.04 LTS server becomes the Hermes base image.

Run by the image build (``agent_image/build.py``) against the temporary server, e.g.::

    pyinfra -y root@203.0.113.7 agent_image/deploy.py --data hermes_wheel=dist/hermes_max-0.1.0-py3-none-any.whl

Host data knobs and their defaults: ``agent_image/image_settings.py``. Tests run the
same deploy against a prepared root with ``@chroot/DIR``.
"""

from pyinfra import host

from agent_image.image_settings import ImageSettings
from agent_image.operations.cleanup import clean_instance_state
from agent_image.operations.embedder import install_embedder
from agent_image.operations.metadata_guard import install_metadata_guard
from agent_image.operations.node_exporter import install_node_exporter
from agent_image.operations.packages import install_packages
from agent_image.operations.python_env import create_user_and_dirs, install_agent
from agent_image.operations.units import install_units
from agent_image.operations.upgrades import configure_unattended_upgrades

settings = ImageSettings.from_host_data(host.data)

install_packages(settings=settings)
create_user_and_dirs(settings=settings)
install_agent(settings=settings)
install_embedder(settings=settings)
install_units(settings=settings)
install_node_exporter(settings=settings)
install_metadata_guard(settings=settings)
configure_unattended_upgrades(settings=settings)
clean_instance_state()
