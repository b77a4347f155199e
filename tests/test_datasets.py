"""Data-set indexes (layout parsing, bad files) and subject-independent protocols."""

from __future__ import annotations

import datasets
import pytest

from facet_vlm.data import (
    bosphorus_protocol,
    bu3dfe_protocol,
    leave_one_subject_out,
    load_bosphorus,
    load_bu3dfe,
    load_bu4dfe,
    subject_kfold,
)
from facet_vlm.errors import ConfigError, DatasetLayoutError
from facet_vlm.labels import BASIC_EXPRESSIONS, BU3DFE_CODES

CODES = [code for code in BU3DFE_CODES if code != "NE"]


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def _bu3dfe_layout(root, subjects=("F0001", "M0001")):
    for subject in subjects:
        _touch(root / subject / f"{subject}_NE00WH_F3D.wrl")
        for code in CODES:
            for level in range(1, 5):
                _touch(root / subject / f"{subject}_{code}{level:02d}WH_F3D.wrl")
                _touch(root / subject / f"{subject}_{code}{level:02d}WH_F3D.bmp")


def _index(num_subjects: int) -> datasets.Dataset:
    rows = [{"subject": f"S{s:03d}", "expression": e, "label": BASIC_EXPRESSIONS.index(e), "intensity": level,
             "path": ""} for s in range(num_subjects) for e in BASIC_EXPRESSIONS for level in range(1, 5)]
    rows += [{"subject": f"S{s:03d}", "expression": "neutral", "label": -1, "intensity": 0, "path": ""}
             for s in range(num_subjects)]
    return datasets.Dataset.from_list(rows)


def test_subject_kfold_partitions_subjects():
    subjects = [f"S{i}" for i in range(23)] * 3  # duplicates count once
    folds = subject_kfold(subjects, k=5, seed=1)
    tests = [set(test) for _, test in folds]
    assert sum(len(t) for t in tests) == 23 and set().union(*tests) == set(subjects)
    assert max(len(t) for t in tests) - min(len(t) for t in tests) <= 1
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == 23
    assert subject_kfold(subjects, k=5, seed=1) == folds and subject_kfold(subjects, k=5, seed=2) != folds
    with pytest.raises(ConfigError):
        subject_kfold(["a", "b"], k=3)


def test_leave_one_subject_out():
    folds = leave_one_subject_out(["b", "a", "c", "a"])
    assert [test for _, test in folds] == [["a"], ["b"], ["c"]]
    assert all(len(train) == 2 and test[0] not in train for train, test in folds)


@pytest.mark.parametrize("protocol", ["p1", "p2"])
def test_bu3dfe_protocol_sizes(protocol):
    index = _index(70)
    folds = bu3dfe_protocol(index, protocol=protocol, k=10, seed=0, round=0)
    assert len(folds) == 10
    test_rows = sum(len(test) for _, test in folds)
    assert test_rows == 60 * 6 * 2
    assert all(len(train) + len(test) == 720 for train, test in folds)
    for train, test in folds[:2]:
        assert not set(train["subject"]) & set(test["subject"])
        assert set(test["intensity"]) == {3, 4} and -1 not in set(test["label"])
    chosen = {s for _, test in folds for s in test.unique("subject")}
    other_round = {s for _, test in bu3dfe_protocol(index, protocol=protocol, seed=0, round=1)
                   for s in test.unique("subject")}
    assert (chosen == other_round) == (protocol == "p1")


def test_bu3dfe_protocol_needs_enough_subjects():
    with pytest.raises(ConfigError, match="60 subjects"):
        bu3dfe_protocol(_index(10))
    assert len(bu3dfe_protocol(_index(10), num_subjects=10, k=5)) == 5


def test_bosphorus_protocol_uses_the_six_expressions():
    folds = bosphorus_protocol(_index(12), k=4)
    assert len(folds) == 4 and sum(len(test) for _, test in folds) == 12 * 6 * 4
    assert all(-1 not in set(test["label"]) for _, test in folds)


def test_bu3dfe_index_columns(tmp_path):
    _bu3dfe_layout(tmp_path)
    index = load_bu3dfe(tmp_path)
    assert index.column_names == ["subject", "expression", "label", "intensity", "path", "sex", "race",
                                  "texture_path", "landmarks_path"]
    assert len(index) == 2 * (6 * 4 + 1)
    row = index[1]
    assert row["subject"] == "F0001" and row["expression"] == "anger" and row["label"] == 0
    assert row["texture_path"].endswith(".bmp") and row["landmarks_path"] == "" and row["sex"] == "F"


def test_bad_names_are_reported_not_dropped(tmp_path):
    _bu3dfe_layout(tmp_path, subjects=("F0001",))
    _touch(tmp_path / "F0001" / "F0001_XX01WH_F3D.wrl")
    _touch(tmp_path / "F0001" / "F0001_HA07WH_F3D.wrl")
    _touch(tmp_path / "F0001" / "M0002_HA01WH_F3D.wrl")
    _touch(tmp_path / "F0001" / "scan.wrl")
    with pytest.warns(UserWarning, match="4 files"):
        index = load_bu3dfe(tmp_path)
    assert len(index) == 25 and len(index.bad_files) == 4
    assert any("XX01" in bad and "unknown expression code" in bad for bad in index.bad_files)
    with pytest.raises(DatasetLayoutError, match="scan.wrl"):
        load_bu3dfe(tmp_path, strict=True)


def test_layout_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetLayoutError, match="missing"):
        load_bu3dfe(tmp_path / "missing")
    (tmp_path / "docs").mkdir()
    with pytest.raises(DatasetLayoutError, match=str(tmp_path)):
        load_bu3dfe(tmp_path)
    with pytest.raises(DatasetLayoutError):
        load_bosphorus(tmp_path)
    with pytest.raises(DatasetLayoutError):
        load_bu4dfe(tmp_path)


def test_bosphorus_index(tmp_path):
    for name in ("bs000_E_HAPPY_0", "bs000_N_N_0", "bs000_LFAU_12_0", "bs000_YR_R10_0"):
        _touch(tmp_path / "bs000" / f"{name}.bnt")
    _touch(tmp_path / "bs000" / "bs000_E_HAPPY_0.png")
    _touch(tmp_path / "bs000" / "bs000_E_GRUMPY_0.bnt")
    with pytest.warns(UserWarning):
        index = load_bosphorus(tmp_path)
    assert sorted(index["expression"]) == ["happiness", "neutral"] and len(index.bad_files) == 1
    with pytest.warns(UserWarning):
        assert len(load_bosphorus(tmp_path, categories=("E", "N", "LFAU", "YR"))) == 4


def test_bu4dfe_index(tmp_path):
    for frame in (2, 0, 10, 1):
        _touch(tmp_path / "F001" / "Happy" / f"{frame:03d}.wrl")
    _touch(tmp_path / "F001" / "Happy" / "000.bmp")
    _touch(tmp_path / "F001" / "Bored" / "000.wrl")
    (tmp_path / "M001" / "Sad").mkdir(parents=True)
    with pytest.warns(UserWarning, match="2 files"):
        index = load_bu4dfe(tmp_path)
    assert len(index) == 1
    row = index[0]
    assert [p.rsplit("/", 1)[1] for p in row["frames"]] == ["000.wrl", "001.wrl", "002.wrl", "010.wrl"]
    assert row["textures"][0].endswith("000.bmp") and row["textures"][1] == ""
    assert row["expression"] == "happiness" and row["label"] == BASIC_EXPRESSIONS.index("happiness")
