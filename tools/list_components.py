#!/usr/bin/env python
"""List every registered component (built-ins and plugins) with its config groups and knobs.

    python tools/list_components.py                     # all registries, as text
    python tools/list_components.py --registry MASK_HEADS
    python tools/list_components.py --format markdown   # the docs/components.md page
    python tools/list_components.py --projects ~/my_repo/projects   # with the plugins of another folder
"""

import sys

from framework.config.listing import main

if __name__ == "__main__":
    sys.exit(main())
