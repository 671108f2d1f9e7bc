#!/usr/bin/env python
"""Draw a dataset's ground truth as the model sees it: after the train or test mapper, into PNGs.

    python tools/visualize_data.py --output vis/                       # the default job's training data
    python tools/visualize_data.py --dataset coco_2017_val --split test --num 20 --output vis/
    python tools/visualize_data.py --json ann.json --image-root images/ --output vis/ \
        input.train.augmentations.0.short_edge_length=[800]

``--split train`` runs the training mapper (its augmentations, e.g. random resize and flip, seeded
by the config's ``seed``) and draws the ``instances`` it produces: the boxes and masks the losses
see, crowd annotations and boxes emptied by the augmentations left out; a mixing augmentation
(copy-paste) draws its other images from the same dataset. ``--split test`` runs the test mapper and draws the dataset's
(non-crowd) annotations scaled to the resized image. Without ``--dataset`` / ``--json`` the config's
``dataset.train`` (or ``dataset.test``) is used. Trailing arguments are Hydra-style overrides of
``configs/train.yaml`` (the ``input`` section, ``dataset=...``, ``seed=...``).

Output: ``<output>/<image file stem>.png`` for the first ``--num`` images of the dataset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from framework.utils.cli import ImageLoop, add_projects_flag, add_traceback_flag, run_tool


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="a registered dataset name, e.g. synthetic_train, coco_2017_val")
    source.add_argument("--json", help="a COCO instances json (with --image-root)")
    parser.add_argument("--image-root", help="folder that the json's file names are relative to")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="which mapper to apply")
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument("--num", type=int, default=16, help="number of images (0: all)")
    add_traceback_flag(parser)
    add_projects_flag(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides of configs/train.yaml")
    args = parser.parse_args(argv)
    if args.json and not args.image_root:
        parser.error("--json needs --image-root (the folder of its images)")
    if args.num < 0:
        parser.error(f"--num must be >= 0, got {args.num}")
    return args


def load_dataset(args: argparse.Namespace, cfg: Any) -> tuple[list[dict], Any]:
    """(dataset dicts, Metadata) of ``--json``, ``--dataset`` or the config's split."""
    from framework.data import get_dataset, get_metadata, load_coco_json
    from framework.data.catalog import Metadata
    from framework.engine.builders import register_split

    if args.json:
        dicts, meta = load_coco_json(args.json, args.image_root, keep_empty=True)
        return dicts, Metadata.from_dict(Path(args.json).stem, meta)
    key = "train" if args.split == "train" else "test"
    name = args.dataset or register_split(cfg.dataset[key], f"dataset.{key}")
    return get_dataset(name), get_metadata(name)


def ground_truth(d: dict, mapped: dict, mapper: Any):
    """Instances to draw on ``mapped["image"]``: the mapper's own (training), else ``d``'s annotations scaled."""
    import torch

    from framework.data.augmentations import AugSample, resize
    from framework.data.detection_utils import annotations_to_instances
    from framework.structures import Instances

    size = tuple(mapped["image"].shape[-2:])
    if mapper.is_train:
        return mapped.get("instances", Instances(size))
    annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
    gt = annotations_to_instances(annos, (mapped["height"], mapped["width"]), mask_format=mapper.mask_format)
    # Only the ground truth is resized (a 0-channel stand-in for the original image); the image is the mapped one.
    sample = AugSample.from_instances(torch.zeros((0, *gt.image_size), dtype=torch.uint8), gt)
    return resize(sample, size, image=mapped["image"]).to_instances()


def with_draws(mapper: Any, dataset_dicts: list[dict], seed: int) -> Any:
    """``mapper``, or, when one of its augmentations mixes in other samples (copy-paste), a function
    mapping each dict with draws from ``dataset_dicts``, seeded from ``seed`` and its position as the
    training loader seeds them (:mod:`framework.data.draws`)."""
    if not getattr(mapper, "takes_draws", False):
        return mapper
    from framework.data.draws import SeededDraws
    from framework.data.map_dataset import MapDataset
    from framework.data.train_items import draws_seed

    dataset = MapDataset(dataset_dicts, mapper, serialize=False)
    positions = {id(d): i for i, d in enumerate(dataset_dicts)}

    def load(d: dict) -> dict:
        draws = SeededDraws(dataset, draws_seed(seed, positions[id(d)]), skip_bad_images=False)
        return mapper(d, draws=draws)

    return load


def run(args: argparse.Namespace) -> int:
    import torch
    from torchvision.transforms.v2.functional import to_pil_image

    from framework.config.compose import compose
    from framework.data.detection_utils import ImageReadError, ImageSizeMismatchError
    from framework.engine.builders import build_mapper
    from framework.utils.visualizer import draw_instances, to_rgb_uint8

    cfg = compose(args.overrides)
    mapper = build_mapper(cfg, args.split)
    all_dicts, meta = load_dataset(args, cfg)
    dicts = all_dicts[: args.num] if args.num else all_dicts
    stems = [Path(d["file_name"]).stem for d in dicts]
    if len(set(stems)) < len(stems):  # same file names in different folders: keep the outputs apart
        stems = [f"{s}_{d['image_id']}" for s, d in zip(stems, dicts)]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(cfg.seed))  # the training mapper's random sizes and flips
    loop = ImageLoop(dicts, with_draws(mapper, all_dicts, int(cfg.seed)), desc=f"{args.split} mapper",
                     errors=(ImageReadError, ImageSizeMismatchError))
    for index, d, mapped in loop:
        image = to_rgb_uint8(mapped["image"], mapper.image_format)
        drawn = draw_instances(image, ground_truth(d, mapped, mapper), class_names=meta.thing_classes,
                               colors=meta.thing_colors, label_background=True)
        to_pil_image(drawn).save(output / f"{stems[index]}.png")
    print(f"Wrote {loop.done} image(s) of {meta.name} after the {args.split} mapper to {output}{loop.skipped_note()}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
