"""Done-when of issue 27: the main job's run directory exports (the command's code path), and
onnxruntime alone, in a process that never imports framework, runs the .onnx on a new image and
gives what ``Predictor.from_run`` gives; tools/demo.py --backend onnxruntime runs it too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from framework.engine.predictor import Predictor
from framework.structures import Boxes, Instances
from parity import assert_parity

REPO = Path(__file__).resolve().parents[2]

# Only numpy, PIL and onnxruntime: what a deployment has. It fails if anything imported framework.
DEPLOYMENT = r"""
import sys
import numpy as np
import onnxruntime
from PIL import Image

image = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
outputs = dict(zip(names, session.run(None, {"image": image})))
np.savez(sys.argv[3], **outputs)
loaded = sorted(m for m in sys.modules if m == "framework" or m.startswith("framework."))
assert not loaded, loaded
"""


def test_onnxruntime_alone_gives_what_predictor_from_run_gives(main_job_run, tmp_path):
    run = main_job_run  # the main job's run directory, exported by the framework-export command
    metadata = json.loads((run / "export" / "metadata.json").read_text())
    assert metadata["files"]["onnx"]["file"] == "model.onnx" and metadata["files"]["onnx"]["opset"] == 21
    assert metadata["files"]["torch_export"]["file"] == "model.pt2"
    assert list(metadata["outputs"]) == ["boxes", "scores", "classes", "masks"]
    assert metadata["inputs"]["image"] == {**metadata["inputs"]["image"], "dtype": "uint8", "shape": ["H", "W", 3]}
    assert metadata["class_names"] == list(Predictor.from_run(run, device="cpu").class_names)

    image_file = tmp_path / "new.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (283, 211, 3), dtype=np.uint8)).save(image_file)
    result = subprocess.run([sys.executable, "-I", "-c", DEPLOYMENT, str(run / "export" / "model.onnx"),
                             str(image_file), str(tmp_path / "out.npz")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert out["masks"].dtype == np.uint8 and out["masks"].shape[1:] == (283, 211)
    assert out["classes"].dtype == np.int64 and out["boxes"].dtype == np.float32

    eager = Predictor.from_run(run, device="cpu")(str(image_file))
    deployed = Instances((283, 211), pred_boxes=Boxes(torch.from_numpy(out["boxes"])),
                         scores=torch.from_numpy(out["scores"]), pred_classes=torch.from_numpy(out["classes"]),
                         pred_masks=torch.from_numpy(out["masks"]).bool())
    assert len(eager) > 50
    assert_parity(eager, deployed, key=("main_job", "onnxruntime alone"))

    # tools/demo.py --backend onnxruntime runs the same export: a drawn image, the same detections in its json
    demo = [sys.executable, str(REPO / "tools" / "demo.py"), "--input", str(image_file), "--output",
            str(tmp_path / "drawn"), "--run", str(run), "--backend", "onnxruntime", "--json", "--score-thresh", "0"]
    result = subprocess.run(demo, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "drawn" / "new.png").is_file()
    detections = json.loads((tmp_path / "drawn" / "coco_instances_results.json").read_text())
    assert len(detections) == len(eager)
