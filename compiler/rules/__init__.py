"""Per-layer knowledge, one module per layer family; importing this package registers them all.

Adding a layer type touches one file: write a ``Rule`` subclass in the family's module (or a new
module imported below) and decorate it with ``@register(TheKerasClass)``.
"""

from . import conv, dense, merge, norm, ops, passthrough, reshape  # noqa: F401  (registration)
from .base import Call, ChannelContext, Rule, register, registered_classes, rule_for

__all__ = ["Call", "ChannelContext", "Rule", "register", "registered_classes", "rule_for"]
