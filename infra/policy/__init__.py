"""CrossGuard policy pack of Hermes Max: ``rules`` (pure functions) and ``pack`` (their policies).

Run it with a preview: ``pulumi preview --stack staging --policy-pack infra/policy``.
"""
