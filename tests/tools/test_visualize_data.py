"""tools/visualize_data.py: ground truth drawn on the mapped images of registered datasets and COCO jsons."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor


def short_long(path) -> tuple[int, int]:
    w, h = Image.open(path).size
    return min(w, h), max(w, h)


def test_synthetic_train_after_the_train_mapper(visualize_data, tmp_path):
    out = tmp_path / "vis"
    assert visualize_data.main(["--dataset", "synthetic_train", "--num", "3", "--output", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["000001.png", "000002.png", "000003.png"]
    for p in pngs:  # resized as in training: short side one of the first augmentation's, long side <= max_size
        short, long = short_long(p)
        assert short in (192, 224, 256) or long == 400


def test_synthetic_val_after_the_test_mapper(visualize_data, tmp_path):
    from framework.config.compose import compose
    from framework.data import get_dataset
    from framework.engine.builders import build_mapper
    from framework.utils.visualizer import to_rgb_uint8

    out = tmp_path / "vis"
    # Without --dataset: the config's dataset.test (synthetic_val).
    size = "input.test.augmentations.0.short_edge_length=[160]"
    assert visualize_data.main(["--split", "test", "--num", "2", "--output", str(out), size]) == 0
    d = get_dataset("synthetic_val")[0]
    plain = to_rgb_uint8(build_mapper(compose([size]), "test")(d)["image"], "BGR")
    drawn = pil_to_tensor(Image.open(out / "000001.png").convert("RGB"))
    assert drawn.shape == plain.shape and min(plain.shape[1:]) == 160
    assert not torch.equal(drawn, plain)  # the annotations are drawn on it


def test_coco_json_and_builtin_coco(visualize_data, coco_tiny, tmp_path, monkeypatch):
    out = tmp_path / "json"
    args = ["--json", str(coco_tiny / "annotations" / "instances_val2017.json"), "--image-root", str(coco_tiny / "val2017"),
            "--split", "test", "--num", "2", "--output", str(out), "input.test.augmentations.0.short_edge_length=[320]",
            "input.test.augmentations.0.max_size=1333"]
    assert visualize_data.main(args) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(short_long(p)[0] == 320 for p in pngs)

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "coco").symlink_to(coco_tiny)  # the layout coco_2017_val expects
    monkeypatch.setenv("FRAMEWORK_DATASETS", str(tmp_path / "datasets"))
    assert visualize_data.main(["--dataset", "coco_2017_val", "--num", "2", "--output", str(tmp_path / "builtin")]) == 0
    assert len(list((tmp_path / "builtin").glob("*.png"))) == 2


def test_errors(visualize_data, tmp_path, capsys):
    assert visualize_data.main(["--dataset", "synthetic_trian", "--output", str(tmp_path)]) == 2
    assert "Unknown dataset 'synthetic_trian'. Did you mean 'synthetic_train'?" in capsys.readouterr().err
    assert visualize_data.main(["--output", str(tmp_path), "input.train.min_sise=[800]"]) == 2
    assert "min_sise" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        visualize_data.main(["--json", "a.json", "--output", str(tmp_path)])
    assert e.value.code == 2 and "--json needs --image-root" in capsys.readouterr().err


def test_a_mixing_augmentation_draws_from_the_dataset_reproducibly(visualize_data, tmp_path):
    args = ["--num", "3", "experiment=lsj_copy_paste_quick", "input.train.augmentations.0.image_size=64"]
    assert visualize_data.main([*args, "--output", str(tmp_path / "a")]) == 0
    assert visualize_data.main([*args, "--output", str(tmp_path / "b")]) == 0
    pngs = sorted((tmp_path / "a").glob("*.png"))
    assert len(pngs) == 3 and all(Image.open(p).size == (64, 64) for p in pngs)  # LSJ's fixed size
    assert all(p.read_bytes() == (tmp_path / "b" / p.name).read_bytes() for p in pngs)
