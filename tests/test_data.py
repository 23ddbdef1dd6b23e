"""Data sets: class index, labels.csv, ImageNet folders, the foolbox demo set."""

import shutil

import pytest

from robustbench_sys.data import class_index, load_dataset, wnid_to_index
from robustbench_sys.errors import UserError


def test_class_index_is_sorted_wnids_and_matches_shared_labels(sample_rows):
    ci = class_index()
    assert len(ci) == 1000 and [w for w, _ in ci] == sorted(w for w, _ in ci)
    idx = wnid_to_index()
    for r in sample_rows:
        assert idx[r["wnid"]] == int(r["class_index"]), r


def test_labels_csv_dataset(imagenet_sample):
    ds = load_dataset(imagenet_sample)
    assert len(ds) == 500 and ds.samples[0].label == 0
    assert ds.fingerprint == load_dataset(imagenet_sample).fingerprint
    assert ds.limit(10).fingerprint != ds.fingerprint


def test_imagenet_folder_layout(tmp_path, sample_rows, imagenet_sample):
    for r in sample_rows[:4]:
        d = tmp_path / r["wnid"]
        d.mkdir()
        shutil.copy(imagenet_sample / r["file"], d / r["file"])
    ds = load_dataset(tmp_path)
    assert [s.label for s in ds.samples] == [int(r["class_index"]) for r in sample_rows[:4]]
    assert ds.samples[0].file == f"{sample_rows[0]['wnid']}/{sample_rows[0]['file']}"


def test_foolbox_demo_has_20_labelled_images():
    ds = load_dataset("foolbox-demo")
    assert len(ds) == 20
    assert all(0 <= s.label < 1000 and s.path.is_file() for s in ds.samples)
    assert ds.samples[0].file == "imagenet_00_243.jpg" and ds.samples[0].label == 243


def test_bad_data_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="neither a labels.csv"):
        load_dataset(tmp_path / "x")
    (tmp_path / "x" / "labels.csv").write_text("file,class_index\na.jpg,1234\n")
    with pytest.raises(UserError, match=r"labels.csv:2: class_index 1234 outside"):
        load_dataset(tmp_path / "x")
    (tmp_path / "x" / "labels.csv").write_text("name,label\na.jpg,1\n")
    with pytest.raises(UserError, match="needs columns 'file'"):
        load_dataset(tmp_path / "x")
