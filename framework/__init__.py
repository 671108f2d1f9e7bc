"""framework: a Hydra-native, plugin-first Mask R-CNN research framework.

Importing ``framework`` registers every built-in component (backbones, heads, poolers, ...)
in the registries of :mod:`framework.registry`.
"""

__version__ = "0.1.0"

import warnings as _warnings

# fvcore.nn scripts its losses with torch.jit at import; recent torch deprecates that loudly.
_warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
