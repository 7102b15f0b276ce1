"""The pack's ``ResourceValidationPolicy`` objects, one per rule in ``infra.policy.rules.RULES``.

Kept apart from ``__main__.py`` because constructing a ``PolicyPack`` starts the analyzer's gRPC
server; tests call each policy's ``validate`` with ``ResourceValidationArgs`` instead.
"""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from infra.policy import rules

PACK_NAME = "hermes-max-policy"

CONFIG_SCHEMAS = {
    "private-hosts-no-public-ipv4": PolicyConfigSchema(
        properties={
            rules.ALLOWED_PUBLIC_IPV4_ROLES: {
                "type": "array",
                "items": {"type": "string", "enum": list(rules.PRIVATE_ROLES)},
                "default": [],
            }
        }
    )
}


def _validator(rule: rules.Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule(args.resource_type, args.props, args.get_config()):
            report_violation(message, args.urn)

    return validate


def build_policies() -> list[Policy]:
    """One mandatory ``ResourceValidationPolicy`` per rule, named as in ``rules.RULES``."""
    return [
        ResourceValidationPolicy(
            name=name,
            description=description,
            validate=_validator(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=CONFIG_SCHEMAS.get(name),
        )
        for name, (description, rule) in rules.RULES.items()
    ]
