#!/usr/bin/env python
"""Train and/or evaluate a model: the Hydra entry point (the same as the ``framework-train`` command).

    python tools/train_net.py                                  # the default job (configs/train.yaml)
    python tools/train_net.py --cfg job model=faster_rcnn_R_50_FPN model.rpn.nms_thresh=0.6
    python tools/train_net.py -m solver.base_lr=0.01,0.02 model/roi_pooler=ROIAlign,ROIAlignV2

See :mod:`framework.engine.cli`.
"""

from framework.engine.cli import main

if __name__ == "__main__":
    main()
