"""Small pyinfra deploys, one concern each, composed by ``agent_image/deploy.py``."""
