"""framework: a Hydra-native, plugin-first Mask R-CNN research framework.

Importing ``framework`` registers every built-in component (backbones, heads, poolers, ...)
in the registries of :mod:`framework.registry`.
"""

__version__ = "0.1.0"
