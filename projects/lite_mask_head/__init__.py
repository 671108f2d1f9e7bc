"""Example plugin: a lighter mask head, selectable as ``model/roi_heads/mask_head=LiteMaskHead``.

Nothing in framework/ or configs/ knows about this folder: plugin discovery imports it, the
decorator registers the head, and registration makes it an option of every config group that
holds a mask head. See docs/plugins.md.
"""

from projects.lite_mask_head.head import LiteMaskHead

__all__ = ["LiteMaskHead"]
