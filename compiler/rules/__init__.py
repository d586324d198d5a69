"""Per-layer knowledge, one module per layer family; importing this package registers them all.

Adding a layer type touches one file: write a ``Rule`` subclass in the family's module, or in a
new module of this package (every module here is imported, so it registers itself), and decorate
it with ``@register(TheKerasClass)``.
"""

import importlib
import pkgutil

from .base import OUTPUTS, Call, ChannelContext, Kept, Rule, register, rule_for, weight_paths

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")    # registration

__all__ = ["Call", "ChannelContext", "Kept", "OUTPUTS", "Rule", "register", "rule_for",
           "weight_paths"]
