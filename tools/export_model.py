#!/usr/bin/env python
"""Export a trained model to ONNX and/or torch.export (the same as the ``framework-export`` command).

    python tools/export_model.py RUN_DIR --format onnx torch_export --output OUT_DIR [key=value ...]
    python tools/export_model.py --format onnx --output OUT_DIR model=mask_rcnn_R_50_FPN weights=model.pkl

See :mod:`framework.export.cli` and docs/deployment.md.
"""

import sys

from framework.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
