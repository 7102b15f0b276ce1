"""Entry point of the CrossGuard policy pack (``pulumi preview --policy-pack infra/policy``).

The repository root is put on ``sys.path`` so ``infra.policy.*`` imports resolve when Pulumi runs
this directory as the program.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy.pack import PACK_NAME, build_policies

PolicyPack(name=PACK_NAME, policies=build_policies(), enforcement_level=EnforcementLevel.MANDATORY)
