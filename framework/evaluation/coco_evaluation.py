"""COCO box / mask AP of a model's predictions, as an evaluator (the metric functions it calls are
in :mod:`framework.evaluation.coco_metrics`).

Protocol (same as detectron2's, so numbers are comparable): predictions become COCO result dicts
(``bbox`` in XYWH pixels, ``category_id`` the dataset's own id, ``segmentation`` as compressed RLE);
``COCOeval`` runs once per task over every image of the ground-truth json, except those the loader
left out as unreadable under ``bad_data=skip`` (:meth:`COCOEvaluator.process_skipped`); for ``segm``
the result boxes are dropped so that the small/medium/large split uses mask areas. Metrics are
percentages, and NaN where COCOeval reports -1 (no ground truth in that area range / category).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from framework.errors import ConfigError, did_you_mean
from framework.evaluation.coco_analysis import ERROR_METRICS, analyze_evaluation
from framework.evaluation.coco_backend import Backend
from framework.evaluation.coco_metrics import AP_METRICS, TASKS, Task, cocoeval_metrics, load_coco_gt, run_cocoeval
from framework.evaluation.evaluator import DatasetEvaluator, EvalResults
from framework.registry import EVALUATORS
from framework.utils import comm

if TYPE_CHECKING:
    from framework.data.skipping import SkippedImage

__all__ = ["COCOEvaluator", "instances_to_coco_json", "RESULTS_FILE_NAME", "GROUND_TRUTH_FILE_NAME"]

logger = logging.getLogger(__name__)

#: Name of the file that :class:`COCOEvaluator` writes into ``output_dir``.
RESULTS_FILE_NAME = "coco_instances_results.json"
#: The ground truth the results are scored against, written beside them once per evaluator.
GROUND_TRUTH_FILE_NAME = "coco_ground_truth.json"


# ------------------------------------------------------------------------------------ conversion
def instances_to_coco_json(
    instances: Any,
    image_id: int,
    contiguous_to_dataset_id: Optional[Mapping[int, int]] = None,
    *,
    with_masks: bool = True,
) -> list[dict[str, Any]]:
    """Convert one image's predictions to COCO result dicts.

    Args:
        instances: an ``Instances`` with ``pred_boxes`` (Boxes or (N, 4) tensor, XYXY absolute),
            ``scores`` (N,), ``pred_classes`` (N,) contiguous ids, and optionally ``pred_masks``
            ((N, H, W) bool/uint8 tensor or BitMasks, full image size).
        image_id: the COCO image id.
        contiguous_to_dataset_id: maps predicted class -> dataset category id (identity if ``None``).
        with_masks: encode ``pred_masks`` (when present) as a compressed RLE ``segmentation``.

    Returns:
        N dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "segmentation"]}``,
        with ``segmentation["counts"]`` a ``str`` so the list can be written as json.
    """
    n = len(instances)
    if n == 0:
        return []
    boxes = instances.pred_boxes
    boxes = (boxes.tensor if hasattr(boxes, "tensor") else torch.as_tensor(boxes)).detach().cpu().float().clone()
    boxes[:, 2:] -= boxes[:, :2]  # XYXY -> XYWH
    scores = instances.scores.detach().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    if contiguous_to_dataset_id is not None:
        unknown = sorted(set(classes) - set(contiguous_to_dataset_id))
        if unknown:
            raise ValueError(
                f"image {image_id}: predicted classes {unknown} are not contiguous ids of the dataset "
                f"(valid: 0..{len(contiguous_to_dataset_id) - 1}); does the model's num_classes match the dataset?"
            )
        category_ids = [int(contiguous_to_dataset_id[c]) for c in classes]
    else:
        category_ids = [int(c) for c in classes]

    rles = None
    if with_masks and instances.has("pred_masks"):
        rles = _encode_masks(instances.pred_masks, image_id)

    results = []
    for k in range(n):
        result = {
            "image_id": int(image_id),
            "category_id": category_ids[k],
            "bbox": boxes[k].tolist(),
            "score": float(scores[k]),
        }
        if rles is not None:
            result["segmentation"] = rles[k]
        results.append(result)
    return results


def _encode_masks(masks: Any, image_id: int) -> list[dict[str, Any]]:
    """(N, H, W) binary masks -> N compressed RLEs with ``counts`` decoded to str."""
    masks = masks.tensor if hasattr(masks, "tensor") else torch.as_tensor(masks)
    if masks.dim() != 3:
        raise ValueError(
            f"image {image_id}: pred_masks must be (N, H, W) full-image masks, got shape {tuple(masks.shape)}"
        )
    if masks.is_floating_point():
        # A float mask could be probabilities or a low-resolution logit map: refuse to guess a threshold.
        raise TypeError(
            f"image {image_id}: pred_masks must be bool (or uint8 0/1) full-image masks, got {masks.dtype}; "
            "threshold/paste them in the model's post-processing"
        )
    # pycocotools wants (H, W, N) uint8 in Fortran order and encodes all N masks in one call.
    array = np.asfortranarray(masks.detach().cpu().to(torch.uint8).permute(1, 2, 0).numpy())
    rles = mask_util.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


# ------------------------------------------------------------------------------------ evaluator
@EVALUATORS.register()
class COCOEvaluator(DatasetEvaluator):
    """COCO AP (box and/or mask) of a model's ``Instances`` predictions.

    ``process`` converts each image's predictions to COCO result dicts on CPU; ``evaluate`` gathers
    them from all ranks, writes ``coco_instances_results.json`` into ``output_dir`` (if given; at the
    first evaluation also ``coco_ground_truth.json``, the ground truth of the evaluated images), and
    runs COCOeval per task over all images of ``gt_json`` (images never processed count as missed)
    except those the loader left out as unreadable (:meth:`process_skipped`): their ground truth is
    left out, so that an unreadable file does not lower AP by counting its objects as missed.

    Runtime args (a run offers them from the test set's metadata):
        gt_json: COCO instances json with the ground truth (``info`` / ``licenses`` may be absent),
            or the json as a dict: the main job gives the ground truth its loader validated
            (:func:`framework.data.coco.coco_ground_truth`), so that an annotation the loader
            dropped cannot reach COCOeval.
        dataset_id_to_contiguous_id: dataset category id -> model class index 0..K-1.
        class_names: K names, indexed by contiguous id (for the per-category AP entries).
        output_dir: where to dump the predictions json (nothing is written if ``None``).
        dataset_dicts: the test set's dataset dicts (``image_id``, ``file_name``): where the
            gallery of failures reads its images (optional; without them there is no gallery).

    Args:
        tasks: which of "bbox" (box AP) and "segm" (mask AP, needs ``pred_masks``) to compute;
            ``None``: "bbox", plus "segm" when the predictions carry masks (as detectron2 infers it).
        max_dets_per_image: detections per image kept by COCOeval (``maxDets`` = [1, 10, this]).
        backend: "pycocotools" (the reference) or "faster_coco_eval" (the same metrics, faster on
            large sets; ``pip install 'framework[fast-eval]'``); see :mod:`framework.evaluation.coco_backend`.
        analysis: also compute, at every evaluation, the TIDE error breakdown (metrics
            ``<task>/dAP-<type>``), write ``errors.json`` / ``.md`` / ``.png`` and
            ``pr_curves_<task>.png`` into ``output_dir``, and, inside a training, put a PR curve per
            category into TensorBoard (:mod:`framework.evaluation.coco_analysis`; docs/evaluation.md
            gives its measured cost).
        gallery_size: with ``analysis``, draw the N images that lose the most (missed objects +
            false positives >= ``gallery_score_thresh``) into ``output_dir/failures/`` and, inside a
            training, TensorBoard (:mod:`framework.evaluation.error_gallery`); 0: no gallery.
        gallery_score_thresh: detections below this score are not drawn in, nor counted by, the gallery.

    ``evaluate()`` returns ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"...},
    "segm": {...}}`` in percent with NaN where undefined, on the main process; ``None`` elsewhere.
    """

    def __init__(
        self,
        gt_json: Union[str, Path, Mapping[str, Any]],
        dataset_id_to_contiguous_id: Mapping[int, int],
        class_names: Sequence[str],
        output_dir: Optional[Union[str, Path]] = None,
        dataset_dicts: Optional[Sequence[Mapping[str, Any]]] = None,
        *,
        tasks: Optional[Sequence[Task]] = None,
        max_dets_per_image: int = 100,
        backend: Backend = "pycocotools",
        analysis: bool = True,
        gallery_size: int = 0,
        gallery_score_thresh: float = 0.5,
    ) -> None:
        if isinstance(tasks, str):
            tasks = (tasks,)
        for task in tasks or ():
            if task not in TASKS:
                raise ConfigError(
                    f"COCOEvaluator: unknown task {task!r}; valid: {list(TASKS)}.{did_you_mean(task, TASKS)}"
                )
        if tasks is not None and (not tasks or len(set(tasks)) != len(tasks)):
            raise ConfigError(f"COCOEvaluator: tasks must be a non-empty list without repeats, got {list(tasks)}")
        if int(max_dets_per_image) < 1:
            raise ConfigError(f"COCOEvaluator: max_dets_per_image must be >= 1, got {max_dets_per_image}")
        self.tasks: Optional[tuple[str, ...]] = tuple(tasks) if tasks is not None else None
        self._masks_seen = False  # for tasks=None: did any processed image carry pred_masks?
        self.max_dets_per_image = int(max_dets_per_image)
        if int(gallery_size) < 0:
            raise ConfigError(f"COCOEvaluator: gallery_size must be >= 0 (0: no gallery), got {gallery_size}")
        if int(gallery_size) > 0 and not analysis:
            raise ConfigError("COCOEvaluator: gallery_size > 0 needs analysis=true (the gallery shows its error types)")
        self.analysis = bool(analysis)
        self.gallery_size = int(gallery_size)
        self.gallery_score_thresh = float(gallery_score_thresh)
        # image id -> file name, for the gallery's pictures
        self._image_files = {int(d["image_id"]): d["file_name"] for d in dataset_dicts or () if "file_name" in d}
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.gt_json = gt_json if isinstance(gt_json, Mapping) else Path(gt_json)
        self._gt_name = "the validated ground truth" if isinstance(gt_json, Mapping) else f"'{self.gt_json}'"
        self._coco_gt = load_coco_gt(self.gt_json, backend=backend)

        # json / OmegaConf may hand the mapping over with str keys.
        mapping = {int(k): int(v) for k, v in dict(dataset_id_to_contiguous_id).items()}
        self.class_names = list(class_names)
        if sorted(mapping.values()) != list(range(len(self.class_names))):
            raise ValueError(
                f"COCOEvaluator: dataset_id_to_contiguous_id must map onto 0..{len(self.class_names) - 1} "
                f"(one per class name), got values {sorted(mapping.values())}"
            )
        gt_ids = set(self._coco_gt.getCatIds())
        unknown = sorted(set(mapping) - gt_ids)
        if unknown:
            raise ValueError(
                f"COCOEvaluator: category ids {unknown} are not in {self._gt_name} (its ids: {sorted(gt_ids)})"
            )
        self._contiguous_to_dataset_id = {v: k for k, v in mapping.items()}
        self._category_names = {k: self.class_names[v] for k, v in mapping.items()}
        self._gt_image_ids = set(self._coco_gt.getImgIds())
        self._predictions: list[dict[str, Any]] = []
        self._skipped_ids: list[int] = []  # images of this rank the loader left out (unreadable)
        self._ground_truth_written = False

    @classmethod
    def from_metadata(cls, metadata: Any, **kwargs: Any) -> "COCOEvaluator":
        """Build from dataset metadata (``json_file``, ``thing_dataset_id_to_contiguous_id``, ``thing_classes``)."""
        return cls(
            gt_json=metadata.json_file,
            dataset_id_to_contiguous_id=metadata.thing_dataset_id_to_contiguous_id,
            class_names=metadata.thing_classes,
            **kwargs,
        )

    def metric_names(self, output_fields: Optional[Collection[str]]) -> Optional[set[str]]:
        """``<task>/<AP metric>`` and ``<task>/AP-<class>`` for each task evaluated: the configured
        ``tasks``, or, with ``tasks=None``, "bbox" plus "segm" when ``output_fields`` has
        ``pred_masks`` (``None`` when that is not known)."""
        tasks = self.tasks
        if tasks is None:
            if output_fields is None:
                return None
            tasks = ("bbox", "segm") if "pred_masks" in output_fields else ("bbox",)
        per_task = [*AP_METRICS, *(f"AP-{name}" for name in self.class_names), *(ERROR_METRICS if self.analysis else ())]
        return {f"{task}/{name}" for task in tasks for name in per_task}

    def reset(self) -> None:
        self._predictions = []
        self._masks_seen = False
        self._skipped_ids = []

    def process_skipped(self, images: Sequence["SkippedImage"]) -> None:
        """Leave these images (unreadable, left out by the loader) out of the ground truth COCOeval
        uses. An image without an ``image_id`` cannot be matched: it is logged and still counts."""
        for image in images:
            if image.image_id is None:
                logger.warning("COCOEvaluator: skipped image %s has no image_id: its ground truth (if any) still "
                               "counts as missed", image.file_name)
            else:
                self._skipped_ids.append(int(image.image_id))

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Convert each image's ``outputs[i]["instances"]`` to COCO result dicts (kept on CPU).

        Raises:
            ValueError / KeyError: on mismatched lengths, a missing ``instances`` / ``image_id``, an
                unknown class, masks of the wrong size, or "segm" requested without ``pred_masks``.
        """
        if len(inputs) != len(outputs):
            raise ValueError(f"COCOEvaluator.process: {len(inputs)} inputs but {len(outputs)} outputs")
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise KeyError(f"COCOEvaluator: model output has no 'instances' (keys: {sorted(out)})")
            if "image_id" not in inp:
                raise KeyError(f"COCOEvaluator: input dict has no 'image_id' (keys: {sorted(inp)})")
            image_id = int(inp["image_id"])
            instances = out["instances"]
            if self.tasks is not None and "segm" in self.tasks and len(instances) > 0 and not instances.has("pred_masks"):
                # Fail on the first batch, not after a full pass over the dataset.
                raise ValueError(
                    "COCOEvaluator: task 'segm' needs predicted masks, but the instances of image "
                    f"{image_id} have no 'pred_masks'; use tasks=['bbox'] for a box-only model"
                )
            if instances.has("pred_masks") and "height" in inp and "width" in inp:
                masks = instances.pred_masks
                size = tuple((masks.tensor if hasattr(masks, "tensor") else masks).shape[-2:])
                if size != (int(inp["height"]), int(inp["width"])):
                    raise ValueError(
                        f"COCOEvaluator: image {image_id} is {inp['height']}x{inp['width']} but its pred_masks "
                        f"are {size[0]}x{size[1]}; masks must be pasted at the original image size"
                    )
            with_masks = instances.has("pred_masks") if self.tasks is None else "segm" in self.tasks
            self._masks_seen |= instances.has("pred_masks")
            self._predictions.append(
                {
                    "image_id": image_id,
                    "instances": instances_to_coco_json(
                        instances, image_id, self._contiguous_to_dataset_id, with_masks=with_masks
                    ),
                }
            )

    def evaluate(self) -> Optional[EvalResults]:
        """Gather predictions on the main process, dump them, and compute AP per task (``None`` on other ranks)."""
        if comm.get_world_size() > 1:
            comm.synchronize()
            predictions = list(itertools.chain.from_iterable(comm.gather(self._predictions, dst=0)))
            masks_seen = any(comm.gather(self._masks_seen, dst=0) or [False])
            skipped_ids = set(itertools.chain.from_iterable(comm.gather(self._skipped_ids, dst=0)))
            if not comm.is_main_process():
                return None
        else:
            predictions, masks_seen, skipped_ids = self._predictions, self._masks_seen, set(self._skipped_ids)
        tasks = self.tasks if self.tasks is not None else (("bbox", "segm") if masks_seen else ("bbox",))
        image_ids = self._evaluated_image_ids(skipped_ids)
        if image_ids is not None and not image_ids:
            logger.warning("COCOEvaluator: every image of %s was left out as unreadable: nothing to evaluate, "
                           "every metric is NaN", self._gt_name)
            # The keys evaluate_coco_results would give: one AP-<name> per category of the ground truth.
            names = {**{c["id"]: c["name"] for c in self._coco_gt.dataset["categories"]}, **self._category_names}
            keys = [*AP_METRICS, *(f"AP-{names[c]}" for c in self._coco_gt.getCatIds())]
            if self.analysis:
                keys += ERROR_METRICS
            return {task: dict.fromkeys(keys, float("nan")) for task in tasks}

        if not predictions:
            logger.warning("COCOEvaluator received no images: every image of %s counts as missed", self._gt_name)
        unknown = sorted({p["image_id"] for p in predictions} - self._gt_image_ids)
        if unknown:
            shown = unknown[:10] + (["..."] if len(unknown) > 10 else [])
            raise ValueError(f"COCOEvaluator: predicted image ids {shown} are not images of {self._gt_name}")
        coco_results = list(itertools.chain.from_iterable(p["instances"] for p in predictions))

        if self.output_dir is not None:
            os.makedirs(self.output_dir, exist_ok=True)
            path = self.output_dir / RESULTS_FILE_NAME
            logger.info("Saving %d COCO results to %s", len(coco_results), path)
            with open(path, "w") as f:
                json.dump(coco_results, f)
            if not self._ground_truth_written:
                # The results are only re-usable (tools/analyze_results.py RUN_DIR) with what they were
                # scored against: in a run that is the ground truth the loader accepted, not the raw json.
                # Written before COCOeval turns the masks into RLEs with bytes in place.
                self._write_ground_truth(self.output_dir / GROUND_TRUTH_FILE_NAME, image_ids)

        start = time.perf_counter()
        coco_evals = {task: run_cocoeval(self._coco_gt, coco_results, task, max_dets_per_image=self.max_dets_per_image,
                                         image_ids=image_ids) for task in tasks}
        results = {task: cocoeval_metrics(e, category_names=self._category_names) for task, e in coco_evals.items()}
        logger.info("COCOeval (%s): %.2f s", ", ".join(tasks), time.perf_counter() - start)
        if self.analysis:
            try:
                analyzed = analyze_evaluation(
                    coco_gt=self._coco_gt, results=coco_results, coco_evals=coco_evals, image_ids=image_ids,
                    category_names=self._category_names, output_dir=self.output_dir,
                    max_dets=self.max_dets_per_image, gallery_size=self.gallery_size,
                    gallery_score_thresh=self.gallery_score_thresh,
                    load_image=self._load_image if self._image_files else None, skip_errors=self._skip_errors())
            except Exception as e:  # noqa: BLE001 - the AP is computed; a diagnostic must not end a training run
                logger.warning(
                    "COCOEvaluator: the error analysis failed (%s: %s); the AP metrics stand, the dAP-* metrics are "
                    "NaN and its files are not written (evaluators.coco.analysis=false turns it off)", type(e).__name__, e,
                )
                analyzed = {task: dict.fromkeys(ERROR_METRICS, float("nan")) for task in tasks}
            for task, metrics in analyzed.items():
                results[task].update(metrics)
        return results

    def _load_image(self, image_id: int) -> tuple[torch.Tensor, str]:
        """An evaluated image as (3, H, W) uint8 RGB, and its file name (for the gallery)."""
        from framework.data.detection_utils import ImageReadError, read_image

        if image_id not in self._image_files:
            raise ImageReadError(f"image {image_id} is not among the evaluator's dataset_dicts")
        return read_image(self._image_files[image_id], "RGB"), self._image_files[image_id]

    @staticmethod
    def _skip_errors() -> tuple[type[BaseException], ...]:
        from framework.data.skipping import BAD_IMAGE_ERRORS

        return BAD_IMAGE_ERRORS

    def _write_ground_truth(self, path: Path, image_ids: Optional[list[int]]) -> None:
        """The ground truth COCOeval uses (without the images left out as unreadable) as a json file."""
        dataset = self._coco_gt.dataset
        if image_ids is not None:
            kept = set(image_ids)
            dataset = {**dataset, "images": [i for i in dataset["images"] if i["id"] in kept],
                       "annotations": [a for a in dataset["annotations"] if a["image_id"] in kept]}
        with open(path, "w") as f:
            json.dump(dataset, f)
        self._ground_truth_written = True

    def _evaluated_image_ids(self, skipped_ids: set[int]) -> Optional[list[int]]:
        """The ground-truth image ids COCOeval is to use: all but ``skipped_ids`` (``None``: all)."""
        left_out = sorted(skipped_ids & self._gt_image_ids)
        if not left_out:
            return None
        shown = left_out[:20] + (["..."] if len(left_out) > 20 else [])
        logger.info("COCOEvaluator: %d unreadable image(s) left out of %s (their objects are not counted as missed): "
                    "image ids %s", len(left_out), self._gt_name, shown)
        return sorted(self._gt_image_ids - skipped_ids)
