"""The dataset catalog, Metadata, register_coco_instances and the built-in registrations."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from framework.data import catalog, synthetic
from framework.data.catalog import (
    Metadata,
    get_dataset,
    get_metadata,
    list_datasets,
    register_coco_instances,
    register_dataset,
    unregister_dataset,
)
from framework.data.coco import DatasetError
from framework.errors import ConfigError

DICTS = [{"file_name": "x.png", "height": 2, "width": 3, "image_id": 1, "annotations": []}]


def _loader():
    return [dict(d) for d in DICTS]


@pytest.fixture
def clean_catalog():
    """Undo the registrations a test makes."""
    before = set(catalog._DATASETS)
    yield
    for name in set(catalog._DATASETS) - before:
        unregister_dataset(name)


def test_register_get_and_metadata(clean_catalog):
    register_dataset("toy", _loader, {"thing_classes": ["a", "b"], "thing_dataset_id_to_contiguous_id": {4: 1, 2: 0}})
    assert "toy" in list_datasets()
    assert get_dataset("toy") == DICTS
    meta = get_metadata("toy")
    assert meta.name == "toy" and meta.thing_classes == ["a", "b"] and meta.num_classes == 2
    assert meta.contiguous_id_to_dataset_id == {0: 2, 1: 4}
    assert meta.evaluator_type == "coco" and meta.json_file is None
    assert len(meta.thing_colors) == 2 and meta.thing_colors[0] != meta.thing_colors[1]
    assert meta.get("thing_classes") == ["a", "b"] and meta.get("nope", 3) == 3


def test_metadata_defaults_to_identity_mapping():
    meta = Metadata.from_dict("m", {"thing_classes": ["a", "b", "c"], "extra": {"keypoints": 0}})
    assert meta.thing_dataset_id_to_contiguous_id == {0: 0, 1: 1, 2: 2}
    assert meta.get("keypoints") == 0


def test_metadata_json_string_keys_become_ints():
    meta = Metadata.from_dict("m", {"thing_classes": ["a", "b"], "thing_dataset_id_to_contiguous_id": {"9": 1, "3": 0}})
    assert meta.thing_dataset_id_to_contiguous_id == {9: 1, 3: 0}


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"thing_classes": ["a"], "thing_clases": []}, "unknown key 'thing_clases'. Did you mean 'thing_classes'"),
        ({"thing_colors": []}, "needs 'thing_classes'"),
        ({"thing_classes": "ab"}, "non-empty list of strings"),
        ({"thing_classes": ["a", "b"], "thing_colors": [(1, 2, 3)]}, "2 RGB triples"),
        ({"thing_classes": ["a", "b"], "thing_dataset_id_to_contiguous_id": {1: 0, 2: 0}}, "one-to-one onto 0..1"),
    ],
)
def test_bad_metadata_fails_at_registration(clean_catalog, values, fragment):
    with pytest.raises(ConfigError) as info:
        register_dataset("bad", _loader, values)
    assert fragment in str(info.value)
    assert "bad" not in list_datasets()


def test_reregistering(clean_catalog):
    meta = {"thing_classes": ["a"]}
    register_dataset("toy", _loader, meta)
    register_dataset("toy", _loader, dict(meta))  # same loader and metadata: a no-op
    with pytest.raises(ConfigError, match="'toy' is already registered with a different loader"):
        register_dataset("toy", lambda: [], meta)
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("toy", _loader, {"thing_classes": ["b"]})
    unregister_dataset("toy")
    register_dataset("toy", lambda: [], meta)


def test_unknown_name_suggests_close_names(clean_catalog):
    register_dataset("toy_train", _loader, {"thing_classes": ["a"]})
    with pytest.raises(ConfigError) as info:
        get_dataset("toy_trian")
    msg = str(info.value)
    assert "Unknown dataset 'toy_trian'" in msg and "Did you mean 'toy_train'" in msg
    assert "'synthetic_train'" in msg  # the registered names are listed
    with pytest.raises(ConfigError, match="Unknown dataset"):
        get_metadata("nope")


def test_loader_must_return_list_of_dicts(clean_catalog):
    register_dataset("broken", lambda: ("x",), {"thing_classes": ["a"]})
    with pytest.raises(DatasetError, match="must return a list of dicts, got tuple"):
        get_dataset("broken")


def _tiny_coco(tmp_path):
    Image.new("RGB", (8, 6)).save(tmp_path / "im.png")
    data = {
        "images": [{"id": 1, "file_name": "im.png", "width": 8, "height": 6}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2], "iscrowd": 0}],
        "categories": [{"id": 9, "name": "cat9"}, {"id": 4, "name": "cat4"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path / "ann.json"


def test_register_coco_instances_is_lazy(clean_catalog, tmp_path):
    json_file = tmp_path / "ann.json"
    register_coco_instances("lazy", json_file=json_file, image_root=tmp_path)  # the file does not exist yet
    with pytest.raises(DatasetError, match="COCO json file not found"):
        get_dataset("lazy")
    _tiny_coco(tmp_path)
    dicts = get_dataset("lazy")
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[1.0, 1.0, 3.0, 3.0]]
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1]
    meta = get_metadata("lazy")
    assert meta.thing_classes == ["cat4", "cat9"]
    assert meta.thing_dataset_id_to_contiguous_id == {4: 0, 9: 1}
    assert meta.json_file == str(json_file) and meta.image_root == str(tmp_path)
    # Same arguments again: accepted as the same registration.
    register_coco_instances("lazy", json_file=json_file, image_root=tmp_path)


def test_register_coco_instances_checks_given_classes(clean_catalog, tmp_path):
    json_file = _tiny_coco(tmp_path)
    register_coco_instances("given", json_file=json_file, image_root=tmp_path, metadata={"thing_classes": ["x", "y"]})
    assert get_metadata("given").thing_classes == ["x", "y"]
    with pytest.raises(DatasetError, match=r"\['cat4', 'cat9'\] differ from the thing_classes registered"):
        get_dataset("given")
    with pytest.raises(ConfigError, match="unknown key 'colors'"):
        register_coco_instances("typo", json_file=json_file, image_root=tmp_path, metadata={"colors": []})


def test_builtin_names_registered():
    assert {"synthetic_train", "synthetic_val", "coco_2017_train", "coco_2017_val"} <= set(list_datasets())


def test_builtin_coco_missing_files_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_DATASETS", str(tmp_path))
    meta = get_metadata("coco_2017_val")  # known without the files
    assert meta.num_classes == 80 and meta.thing_classes[:2] == ["person", "bicycle"]
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79 and meta.contiguous_id_to_dataset_id[11] == 13
    assert meta.json_file == str(tmp_path / "coco" / "annotations" / "instances_val2017.json")
    with pytest.raises(DatasetError) as info:
        get_dataset("coco_2017_val")
    msg = str(info.value)
    assert str(tmp_path / "coco" / "annotations" / "instances_val2017.json") in msg and "FRAMEWORK_DATASETS" in msg


def test_builtin_synthetic_generated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_CACHE", str(tmp_path))
    monkeypatch.setattr(synthetic, "DEFAULT_NUM_IMAGES", {"train": 2, "val": 1})
    dicts = get_dataset("synthetic_val")
    assert len(dicts) == 1 and (tmp_path / "synthetic_v2" / synthetic.MARKER_FILE).is_file()
    meta = get_metadata("synthetic_train")
    assert meta.thing_classes == ["disk", "square", "triangle", "cross"]
    assert meta.thing_dataset_id_to_contiguous_id == {2: 0, 5: 1, 9: 2, 12: 3}
    assert meta.json_file == str(tmp_path / "synthetic_v2" / "annotations" / "instances_train.json")
    assert meta.image_root == str(tmp_path / "synthetic_v2" / "train")
    assert len(get_dataset("synthetic_train")) == 2
