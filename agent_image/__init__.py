"""The Hermes base image: a pyinfra deploy (``deploy.py``) that turns a fresh Ubuntu 22.04
server into the snapshot every tenant VM boots from, and the build flow around it."""
