from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coopasd.data.layout import (
    discover_clips,
    list_machine_types,
    parse_attribute_string,
    parse_clip_path,
)
from coopasd.errors import LayoutError
from tests.helpers import sine, write_wav


def _tree(tmp_path: Path, names: dict[str, list[str]]) -> Path:
    for rel_dir, files in names.items():
        for name in files:
            write_wav(tmp_path / rel_dir / name, sine(440, 0.1))
    return tmp_path


def test_parse_full_name_with_attributes():
    clip = parse_clip_path(Path("x/section_00_target_test_anomaly_0007_car_A1_spd_28V_mic_1.wav"), "ToyCar", "test")
    assert (clip.section, clip.domain, clip.split, clip.label, clip.index) == (
        "00",
        "target",
        "test",
        "anomaly",
        7,
    )
    assert clip.attributes == (("car", "A1"), ("spd", "28V"), ("mic", "1"))
    assert clip.attribute_string == "car_A1_spd_28V_mic_1"
    assert not clip.labels_hidden


def test_parse_hidden_eval_name():
    clip = parse_clip_path(Path("section_01_0042.wav"), "fan", "test")
    assert (clip.section, clip.index, clip.domain, clip.label) == ("01", 42, None, None)
    assert clip.labels_hidden


def test_attribute_strings_odd_and_no_attribute():
    assert parse_attribute_string("noAttribute") == ()
    assert parse_attribute_string("m-n_W") == (("m-n", "W"),)
    assert parse_attribute_string("a_1_b") == (("attr", "a_1_b"),)


@pytest.mark.parametrize(
    "name,split",
    [
        ("section_0_source_train_normal_0001.wav", "train"),
        ("normal_0001.wav", "train"),
        ("section_00_source_train_weird_0001.wav", "train"),
        ("section_00_0001.wav", "train"),  # hidden form is only valid for test clips
        ("section_00_source_test_normal_0001.wav", "train"),  # split in name != folder
    ],
)
def test_unparseable_names_name_the_file(name, split):
    with pytest.raises(LayoutError) as info:
        parse_clip_path(Path("/data/fan") / split / name, "fan", split)
    assert name in str(info.value)


def test_all_bad_names_reported_at_once(tmp_path):
    root = _tree(tmp_path, {"fan/train": ["section_00_source_train_normal_0000_a_1.wav", "bad1.wav", "bad2.wav"]})
    with pytest.raises(LayoutError) as info:
        discover_clips(root)
    message = str(info.value)
    assert "2 file name(s)" in message and "bad1.wav" in message and "bad2.wav" in message


def test_unknown_machine_directory(tmp_path):
    root = _tree(tmp_path, {"fan/train": ["section_00_source_train_normal_0000.wav"]})
    (root / "notes").mkdir()
    with pytest.raises(LayoutError, match="unknown machine directory") as info:
        list_machine_types(root)
    assert "notes" in str(info.value)


def test_unknown_requested_machine_type(tmp_path):
    root = _tree(tmp_path, {"fan/train": ["section_00_source_train_normal_0000.wav"]})
    with pytest.raises(LayoutError, match="unknown machine type"):
        discover_clips(root, ["pump"])


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        discover_clips(tmp_path / "nope")
    with pytest.raises(LayoutError, match="no machine-type folders"):
        discover_clips(tmp_path)


def test_discover_synthetic_tree(tiny_tree):
    clips = discover_clips(tiny_tree)
    assert {c.machine_type for c in clips} == {"fan", "valve"}
    fan = [c for c in clips if c.machine_type == "fan"]
    assert sum(c.split == "train" and c.domain == "source" for c in fan) == 6
    assert sum(c.split == "train" and c.domain == "target" for c in fan) == 2
    assert all(c.label == "normal" for c in fan if c.split == "train")
    assert sum(c.label == "anomaly" for c in fan) == 6  # 3 per domain
    assert all(c.attributes for c in clips)


def test_attribute_csv_disagreeing_with_name_is_an_error(tmp_path, tiny_tree):
    root = tmp_path / "tree"
    shutil.copytree(tiny_tree, root)
    csv_path = root / "fan" / "attributes_00.csv"
    lines = csv_path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[2] = "9999"  # first attribute value
    lines[1] = ",".join(fields)
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LayoutError, match="disagree") as info:
        discover_clips(root)
    assert "attributes_00.csv" in str(info.value) and Path(fields[0]).name in str(info.value)


def test_attribute_csv_supplies_attributes_missing_from_names(tmp_path):
    root = _tree(tmp_path, {"fan/train": ["section_00_source_train_normal_0000.wav"]})
    (root / "fan" / "attributes_00.csv").write_text(
        "file_name,d1p,d1v\nfan/train/section_00_source_train_normal_0000.wav,spd,28\n"
    )
    (clip,) = discover_clips(root)
    assert clip.attributes == (("spd", "28"),)


def test_attribute_csv_without_header_is_an_error(tmp_path):
    root = _tree(tmp_path, {"fan/train": ["section_00_source_train_normal_0000.wav"]})
    (root / "fan" / "attributes_00.csv").write_text("fan/train/x.wav,spd,28\n")
    with pytest.raises(LayoutError, match="header"):
        discover_clips(root)


def test_hidden_labels_take_ground_truth(tmp_path):
    from tests.helpers import make_tree

    root = make_tree(tmp_path / "t", hide_labels=True, machines=("valve",))
    test = [c for c in discover_clips(root) if c.split == "test"]
    assert all(c.name.count("_") == 2 for c in test)  # section_00_NNNN.wav
    assert not any(c.labels_hidden for c in test)
    assert sum(c.label == "anomaly" for c in test) == 6
    assert sum(c.domain == "target" for c in test) == 6


def test_hidden_labels_without_domain_csv_is_an_error(tmp_path):
    from tests.helpers import make_tree

    root = make_tree(tmp_path / "t", hide_labels=True, machines=("valve",))
    shutil.rmtree(root / "ground_truth_domain")
    with pytest.raises(LayoutError, match="domain csv"):
        discover_clips(root)


def test_hidden_labels_without_any_ground_truth_stay_hidden(tmp_path):
    from tests.helpers import make_tree

    root = make_tree(tmp_path / "t", hide_labels=True, machines=("valve",))
    shutil.rmtree(root / "ground_truth_domain")
    shutil.rmtree(root / "ground_truth_data")
    test = [c for c in discover_clips(root) if c.split == "test"]
    assert test and all(c.labels_hidden for c in test)
