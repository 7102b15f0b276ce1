"""Entry point of the shared stack: ``pulumi up --stack <env>`` in the repository root.

Pulumi runs this file with ``infra/`` (``Pulumi.yaml``: ``main: infra/``) first on ``sys.path``;
the repository root is added so ``infra.*`` imports resolve even when the project is not
installed in the virtualenv.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from infra.shared import build_shared_stack

build_shared_stack()
