"""Model components. Importing this package registers every built-in component."""

from framework.modeling import anchor_generator, backbone, poolers  # noqa: F401
from framework.modeling import meta_arch, proposal_generator, roi_heads, tta  # noqa: F401
