"""The main job shrunk for end-to-end tests: the real code path, on small images, for a few steps.

End-to-end tests start from :func:`tiny_job` and add what they test (hook periods, launchers...).
Imported by name (``from tiny_job import tiny_job``): pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

#: Training and test images at about a third of the main job's size.
SMALL_IMAGES = ["input.train.augmentations.0.short_edge_length=[128]", "input.train.augmentations.0.max_size=192",
                "input.test.augmentations.0.short_edge_length=[128]", "input.test.augmentations.0.max_size=192"]
#: An untrained model keeps 100 near-random detections per image; 20 halve the evaluation's time
#: (mask head, pasting, COCOeval) and still exercise all of it.
FEW_DETECTIONS = ["model.roi_heads.box_predictor.test_detections_per_img=20"]


def tiny_job(max_iter: int, *, warmup: int | None = None, lr_step: int | None = None, workers: int = 0) -> list[str]:
    """Overrides for ``max_iter`` steps (``warmup`` steps of warm-up, by default the first third;
    one LR drop at ``lr_step``), small images, 20 detections per test image and ``workers`` data
    loader workers."""
    warmup = max(1, max_iter // 3) if warmup is None else warmup
    return [f"train.max_iter={max_iter}", f"lr_scheduler.warmup_iters={warmup}",
            f"lr_scheduler.steps={[] if lr_step is None else [lr_step]}", *SMALL_IMAGES, *FEW_DETECTIONS,
            f"dataloader.train.num_workers={workers}", f"dataloader.test.num_workers={workers}"]


def first_test_images(n: int) -> list[str]:
    """Overrides that evaluate on the first ``n`` images of the built-in validation set, registered
    (in this process) as ``synthetic_val_first<n>``; its ground truth is those images' only."""
    from framework.data import get_dataset, get_metadata, list_datasets, register_dataset

    name = f"synthetic_val_first{n}"
    if name not in list_datasets():
        register_dataset(name, lambda: get_dataset("synthetic_val")[:n],
                         lambda: {k: v for k, v in vars(get_metadata("synthetic_val")).items() if k != "name"})
    return [f"dataset.test.name={name}"]
