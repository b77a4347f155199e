"""Sequences (4D): BP4D and 4DME readers on generated data, frame selection, the per-frame cache, bad frames, UF1."""

from __future__ import annotations

import csv
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Array2D

from facet_vlm.data import (
    FrameSelection,
    SequenceError,
    apex_frame_index,
    apex_rows,
    cross_dataset_subset,
    generate_sequences,
    leave_one_subject_out_folds,
    load_4dme,
    load_bp4d,
    select_frame_indices,
    select_frames,
    sequence_frames,
    sort_frames,
)
from facet_vlm.data.cache import multiview_features
from facet_vlm.data.prepare import FeatureCollator
from facet_vlm.data.sequence_cache import FrameCache, prepare_sequence_features, sequence_features
from facet_vlm.errors import DatasetLayoutError, UnsupportedFormatError
from facet_vlm.geometry import render_views
from facet_vlm.geometry.align import align
from facet_vlm.io import read_face, read_tbnd
from facet_vlm.labels import LABEL_SETS

SUBJECTS, FRAMES, CLIPS = 2, 6, 2


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequences")
    result = generate_sequences(root, subjects=SUBJECTS, seed=3, frames=FRAMES, clips=CLIPS, micro_frames=5,
                                macro_frames=7, vertices=300, texture_size=32)
    return root, result


def truth(result, fmt: str) -> dict[str, dict]:
    return {Path(s["path"]).name if fmt == "4dme" else f"{Path(s['path']).parent.name}/{s['sequence']}": s
            for s in result.sequences if s["format"] == fmt}


class CountingFeatures:
    """Centroid of the frame; every call appends a byte to `counter`; call number `fail_after` + 1 crashes."""

    def __init__(self, counter: Path, fail_after: int | None = None):
        self.counter, self.fail_after = counter, fail_after

    spec = {"name": "centroid-test"}

    def features(self, dtype):
        return {"centroid": Array2D((1, 3), dtype)}

    def __call__(self, face):
        with open(self.counter, "ab") as handle:
            handle.write(b".")
        if self.fail_after is not None and self.counter.stat().st_size > self.fail_after:
            raise RuntimeError("simulated crash")
        return {"centroid": face.vertices.mean(axis=0, keepdims=True)}


def calls(counter: Path) -> int:
    return counter.stat().st_size if counter.exists() else 0


# --- readers -------------------------------------------------------------------------------------------------------


def test_bp4d_reader_indexes_tasks_frames_and_au_codes(generated):
    root, result = generated
    dataset = load_bp4d(root)
    assert dataset.bad_files == []
    assert len(dataset) == SUBJECTS * 8
    expected = truth(result, "bp4d")
    for row in dataset:
        assert row["expression"] == {"T1": "happiness", "T2": "sadness", "T3": "surprise", "T4": "embarrassment",
                                     "T5": "fear", "T6": "pain", "T7": "anger", "T8": "disgust"}[row["task"]]
        assert LABEL_SETS["bp4d_tasks"][row["label"]] == row["expression"]
        assert row["num_frames"] == FRAMES and row["sex"] == row["subject"][0]
        assert [Path(f).name for f in row["frames"]] == [f"{i:04d}.obj" for i in range(FRAMES)]
        assert Path(row["frames"][0]).parent.parent.parent.name == "Sequences(2D+3D)"
        with open(row["au_path"]) as handle:
            table = list(csv.reader(handle))
        by_au_frame = {int(line[0]): line for line in table[1:]}
        truth_acts = expected[f"{row['subject']}/{row['task']}"]["activations"]
        for au in (4, 12):
            column = table[0].index(str(au))
            # model frame N takes the AU row of frame N + 1 (the guide); the last model frame is not coded
            assert row[f"au{au:02d}"] == [int(by_au_frame[n + 1][column]) if n + 1 in by_au_frame else -1
                                          for n in range(FRAMES)]
            assert row[f"au{au:02d}"][:-1] == [int(acts.get(au, 0.0) >= 0.25) for acts in truth_acts[:-1]]
            assert row[f"au{au:02d}"][-1] == -1
        assert row["au12_int"][:-1] == [0 if a.get(12, 0.0) < 0.25 else min(5, int(np.ceil(a[12] * 5)))
                                        for a in truth_acts[:-1]]
        assert "au10" not in row  # the face model has no AU10: coded 9 (unknown) everywhere, so not indexed
        pose, marks = read_tbnd(row["landmark_frames"][2])
        np.testing.assert_allclose(marks, read_bnd_points(row["landmark_frames"][2]), atol=1e-6)
        assert pose.shape == (3,) and marks.shape == (83, 3)
        apex = expected[f"{row['subject']}/{row['task']}"]["apex"]
        if row["task"] == "T1":  # happiness = AU6 + AU12: coded at the apex, not on the neutral first frame
            assert row["au12"][apex] == 1 and row["au12"][0] == 0


def read_bnd_points(path):
    """The landmark rows of a .tbnd written by the generator (x y z after the pose line), read independently."""
    return np.loadtxt(path, skiprows=1)


def test_bp4d_refuses_a_root_it_cannot_read_and_never_indexes_without_labels(generated, tmp_path):
    root, _ = generated
    with pytest.raises(DatasetLayoutError, match=r"no Sequences\(2D\+3D\) and no AUCoding/AU_OCC"):
        load_bp4d(tmp_path)
    copy = tmp_path / "db"
    shutil.copytree(root / "bp4d", copy)
    shutil.rmtree(copy / "AUCoding" / "AU_OCC")
    with pytest.raises(DatasetLayoutError, match="no AUCoding/AU_OCC folder"):
        load_bp4d(copy)
    (copy / "AUCoding" / "AU_OCC").mkdir()
    for path in (root / "bp4d" / "AUCoding" / "AU_OCC").iterdir():
        (copy / "AUCoding" / "AU_OCC" / path.name).write_text("Frame,1\n1,yes\n")
    with pytest.raises(DatasetLayoutError, match="refusing an index without AU labels"):
        load_bp4d(copy)
    shutil.rmtree(copy / "3DFeatures")
    with pytest.raises(DatasetLayoutError, match="no 3DFeatures folder"):
        load_bp4d(copy, landmarks=True)


def test_bp4d_reports_every_file_that_does_not_fit(generated, tmp_path):
    root, _ = generated
    copy = tmp_path / "bp4d"
    shutil.copytree(root / "bp4d", copy)
    sequences, occurrence = copy / "Sequences(2D+3D)", copy / "AUCoding" / "AU_OCC"
    (sequences / "F001" / "T9").mkdir()
    (sequences / "F001" / "T1" / "notes.txt").write_text("x")
    (sequences / "M001" / "T2").rename(sequences / "M001" / "T2_moved")
    shutil.copy(occurrence / "M001_T1.csv", occurrence / "M009_T1.csv")
    (occurrence / "M001_T3.csv").write_text("Frame,1\n0,yes\n")
    (copy / "AUCoding" / "AU_INT" / "F001_T2_AU12.csv").write_text("1,7\n")
    (copy / "3DFeatures" / "F001" / "T5" / "0003.tbnd").unlink()
    for path in (sequences / "F001" / "T4").iterdir():  # an empty task folder
        path.unlink()
    with pytest.warns(UserWarning, match="do not follow"):
        dataset = load_bp4d(copy)
    reported = "\n".join(dataset.bad_files)
    for fragment in ("T9: not a task folder", "notes.txt: not a frame", "T2_moved: not a task folder",
                     "M009_T1.csv: AU file of M009 T1", "M001_T3.csv: line 2", "T4: task folder holds no frames",
                     "F001_T2_AU12.csv: line 1: intensity code 7", "T5: 1 of 6 model frames have no .tbnd",
                     "M001/T3: no AU occurrence file M001_T3.csv"):
        assert fragment in reported, fragment
    assert len(dataset) == SUBJECTS * 8 - 2
    m001_t3 = dataset.filter(lambda row: row["subject"] == "M001" and row["task"] == "T3")[0]
    assert m001_t3["au_path"] == "" and set(m001_t3["au12"]) == {-1}
    f001_t5 = dataset.filter(lambda row: row["subject"] == "F001" and row["task"] == "T5")[0]
    assert f001_t5["landmark_frames"][3] == "" and f001_t5["landmark_frames"][2].endswith("0002.tbnd")
    with pytest.raises(DatasetLayoutError, match="do not follow the BP4D"):
        load_bp4d(copy, strict=True)


def test_frames_are_sorted_in_numeric_order(generated, tmp_path):
    root, _ = generated
    copy = tmp_path / "bp4d"
    shutil.copytree(root / "bp4d", copy)
    task = copy / "Sequences(2D+3D)" / "F001" / "T1"
    for i in range(FRAMES):  # unpadded numbers 8, 9, 10, ...: name order is not frame order
        for suffix in (".obj", ".mtl", ".jpg"):
            (task / f"{i:04d}{suffix}").rename(task / f"{i + 8}{suffix}")
    dataset = load_bp4d(copy, landmarks=False, au_intensity=False)
    row = dataset.filter(lambda row: row["subject"] == "F001" and row["task"] == "T1")[0]
    assert [Path(f).name for f in row["frames"]] == [f"{i + 8}.obj" for i in range(FRAMES)]
    assert row["au12"] == [-1] * FRAMES  # frames 8.. take AU rows 9.., which the file does not have
    assert sort_frames(["b/10.obj", "b/9.obj", "b/frame_0011.obj"]) == ["b/9.obj", "b/10.obj", "b/frame_0011.obj"]
    with pytest.raises(DatasetLayoutError, match="two frames carry frame number 9"):
        sort_frames(["9.obj", "009.obj"])


def test_4dme_reader_maps_sheet_frame_numbers_to_positions(generated):
    root, result = generated
    dataset = load_4dme(root)
    assert dataset.bad_files == []
    assert len(dataset) == SUBJECTS * CLIPS
    expected = truth(result, "4dme")
    for row in dataset:
        clip = expected[row["clip"]]
        assert (row["onset"], row["apex"], row["offset"]) == (clip["onset"], clip["apex"], clip["offset"])
        assert Path(row["frames"][row["apex"]]).stem == f"{row['apex_frame']:04d}"
        assert row["kind"] == clip["kind"] and row["expression"] == clip["expression"]
        assert LABEL_SETS["4dme"][row["label"]] == row["expression"]
    micro = load_4dme(root, kind="micro")
    assert set(micro["kind"]) == {"micro"} and len(micro) == SUBJECTS * CLIPS // 2


def test_4dme_sheet_columns_are_arguments_and_problems_are_reported(generated, tmp_path):
    root, _ = generated
    copy = tmp_path / "4dme"
    shutil.copytree(root / "4dme", copy)
    sheet = copy / "labels.csv"
    lines = sheet.read_text().splitlines()
    lines[0] = lines[0].replace("Clip", "Filename").replace("Emotion", "Estimated Emotion")
    lines.append("S01,S01_micro_09,1,2,3,positive,micro")  # a clip with no frames
    lines.append("S02,S02_micro_01,1,2,3,joy,micro")  # unknown emotion (and the clip is named twice)
    sheet.write_text("\n".join(lines) + "\n")
    shutil.copytree(copy / "S01" / "S01_micro_01", copy / "S01" / "S01_micro_07")  # a folder the sheet omits
    with pytest.raises(DatasetLayoutError, match="lacks the columns"):
        load_4dme(copy)
    with pytest.warns(UserWarning):
        dataset = load_4dme(copy, columns={"clip": "Filename", "emotion": "Estimated Emotion"})
    reported = "\n".join(dataset.bad_files)
    assert "clip S01_micro_09 has no frames" in reported
    assert "S02_micro_01 is named twice" in reported
    assert "S01_micro_07: clip folder not named in the label sheet" in reported
    assert len(dataset) == SUBJECTS * CLIPS


def test_4dme_reads_an_xlsx_sheet_like_its_csv_and_names_the_missing_reader(generated, tmp_path, monkeypatch):
    openpyxl = pytest.importorskip("openpyxl")  # the `xlsx` extra, part of the test extra
    root, _ = generated
    copy = tmp_path / "4dme"
    shutil.copytree(root / "4dme", copy)
    csv_sheet = copy / "labels.csv"
    book = openpyxl.Workbook()
    with open(csv_sheet, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            book.active.append(row)
    xlsx = copy / "labels.xlsx"
    book.save(xlsx)
    from_csv = load_4dme(copy, label_sheet=csv_sheet)
    from_xlsx = load_4dme(copy, label_sheet=xlsx)
    assert from_xlsx.bad_files == [] and len(from_xlsx) == len(from_csv) == SUBJECTS * CLIPS
    assert [(r["clip"], r["onset"], r["apex"], r["offset"], r["label"]) for r in from_xlsx] == [
        (r["clip"], r["onset"], r["apex"], r["offset"], r["label"]) for r in from_csv]
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # as without the extra: the import fails
    with pytest.raises(UnsupportedFormatError, match=r"facet-vlm\[xlsx\]") as error:
        load_4dme(copy, label_sheet=xlsx)
    assert str(xlsx) in str(error.value)


def test_protocol_helpers(generated):
    root, _ = generated
    folds = leave_one_subject_out_folds(load_4dme(root))
    assert len(folds) == SUBJECTS
    for train, test in folds:
        assert len(set(test["subject"])) == 1 and not set(test["subject"]) & set(train["subject"])
        assert len(train) + len(test) == SUBJECTS * CLIPS
    subset, kept, dropped = cross_dataset_subset(load_bp4d(root), LABEL_SETS["basic6"])
    assert dropped == ["embarrassment", "pain"] and len(kept) == 6 and len(subset) == SUBJECTS * 6
    assert all(LABEL_SETS["basic6"][label] == expression for label, expression in
               zip(subset["label"], subset["expression"]))


def test_a_sequence_given_as_folder_list_or_zip(generated, tmp_path):
    root, _ = generated
    folder = root / "bp4d" / "Sequences(2D+3D)" / "F001" / "T3"
    expected = [str(folder / f"{i:04d}.obj") for i in range(FRAMES)]
    assert sequence_frames(folder) == expected
    assert sequence_frames(list(reversed(expected))) == expected
    with pytest.raises(SequenceError, match="missing"):
        sequence_frames(expected + [str(folder / "0099.obj")])
    archive = tmp_path / "clip.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.iterdir(), reverse=True):
            handle.write(path, f"clip/{path.name}")
    frames = sequence_frames(archive, extract_to=tmp_path / "out")
    assert [Path(f).name for f in frames] == [Path(f).name for f in expected]
    assert read_face(frames[0]).num_vertices == read_face(expected[0]).num_vertices
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../0001.wrl", "x")
    with pytest.raises(SequenceError, match="points outside"):
        sequence_frames(evil, extract_to=tmp_path / "evil")


# --- frame selection -----------------------------------------------------------------------------------------------


def test_unannotated_selection_matches_the_model_sampler():
    from facet_vlm.models.facet_vlm.modeling_facet_vlm import sample_sequence_frames

    for total in (1, 3, 7, 20):
        for frames in (1, 2, 5, 8):
            assert select_frame_indices(total, frames) == sample_sequence_frames(total, frames)
            assert (select_frame_indices(total, frames, "onset_apex_offset")
                    == sample_sequence_frames(total, frames, "onset_apex_offset"))
            apex = total // 3
            assert (select_frame_indices(total, frames, "onset_apex_offset", apex=apex)
                    == sample_sequence_frames(total, frames, "onset_apex_offset", apex_index=apex))


def test_onset_apex_offset_stays_inside_the_annotated_span():
    indices = select_frame_indices(40, 6, "onset_apex_offset", onset=10, apex=14, offset=30)
    assert indices[0] == 10 and indices[-1] == 30 and 14 in indices
    assert indices == sorted(indices) and len(indices) == 6
    assert sum(i <= 14 for i in indices) == 3  # half before (and at) the apex
    assert select_frame_indices(40, 4, "uniform", onset=10, offset=30) == [10, 17, 23, 30]
    assert select_frame_indices(40, 3, "apex", onset=10, apex=14, offset=30) == [14, 14, 14]
    with pytest.raises(SequenceError, match="apex 35 is outside"):
        select_frame_indices(40, 4, "onset_apex_offset", onset=10, apex=35, offset=30)


def test_short_sequences_repeat_or_refuse():
    repeated = select_frame_indices(3, 6)
    assert len(repeated) == 6 and sorted(set(repeated)) == [0, 1, 2] and repeated == sorted(repeated)
    with pytest.raises(SequenceError, match="clip_a: 3 frames between onset and offset, fewer than the 6"):
        select_frame_indices(3, 6, short_policy="refuse", name="clip_a")
    with pytest.raises(SequenceError, match="2 frames between"):
        select_frame_indices(10, 4, "onset_apex_offset", onset=4, offset=5, short_policy="refuse")
    assert select_frame_indices(10, 4, short_policy="refuse") == [0, 3, 6, 9]


def test_apex_is_the_frame_farthest_from_the_first(generated):
    root, result = generated
    errors = []
    for sequence in result.sequences:
        frames = sorted(str(p) for p in Path(sequence["path"]).iterdir() if p.suffix in (".wrl", ".obj"))
        errors.append(abs(apex_frame_index(frames) - sequence["apex"]))
    assert max(errors) <= 1 and np.mean(np.equal(errors, 0)) >= 0.75
    bp4d = load_bp4d(root).select([0])
    static = FrameSelection(num_frames=2, mode="apex", apex_from_geometry=True)
    assert select_frames(bp4d[0], static) == [bp4d[0]["frames"][apex_frame_index(bp4d[0]["frames"])]] * 2
    assert select_frames(bp4d[0], FrameSelection(num_frames=1, mode="apex")) == [bp4d[0]["frames"][FRAMES // 2 - 1]]
    rows = apex_rows(load_4dme(root))
    assert [Path(p).name for p in rows["path"]] == [Path(f[a]).name for f, a in zip(rows["frames"], rows["apex"])]
    assert rows["sequence_path"] == load_4dme(root)["path"]


def test_micro_clips_move_less_than_macro_clips(generated):
    from facet_vlm.data.sequences import frame_distance

    _, result = generated
    moves = {"micro": [], "macro": []}
    for clip in (s for s in result.sequences if s["format"] == "4dme"):
        frames = sorted(Path(clip["path"]).glob("*.wrl"))
        moves[clip["kind"]].append(frame_distance(read_face(frames[0]), read_face(frames[clip["apex"]])))
    assert max(moves["micro"]) < min(moves["macro"])


# --- per-frame cache -----------------------------------------------------------------------------------------------


def test_a_frame_shared_by_two_samplings_is_rendered_once(generated, tmp_path):
    root, _ = generated
    dataset = load_4dme(root)
    counter = tmp_path / "calls"
    uniform, oao = FrameSelection(num_frames=3), FrameSelection(num_frames=3, mode="onset_apex_offset")
    first, rendered = prepare_sequence_features(dataset, tmp_path / "cache", CountingFeatures(counter), uniform)
    set_uniform = {p for paths in first["selected_frames"] for p in paths}
    assert rendered == calls(counter) == len(set_uniform)
    second, rendered = prepare_sequence_features(dataset, tmp_path / "cache", CountingFeatures(counter), oao)
    set_oao = {p for paths in second["selected_frames"] for p in paths}
    assert set_uniform & set_oao and rendered == len(set_oao - set_uniform)
    assert calls(counter) == len(set_uniform | set_oao)
    _, rendered = prepare_sequence_features(dataset, tmp_path / "cache", CountingFeatures(counter), oao)
    assert rendered == 0 and calls(counter) == len(set_uniform | set_oao)
    row = second[1]
    assert row["centroid"].shape == (3, 1, 3)
    for frame, value in zip(row["selected_frames"], row["centroid"]):
        np.testing.assert_allclose(value[0], read_face(frame).vertices.mean(axis=0), rtol=1e-6)


def test_cached_views_stack_to_t_v_c_h_w_and_equal_a_fresh_render(generated, tmp_path):
    root, _ = generated
    dataset = load_bp4d(root).select([0, 9])
    views = [(0.0, 0.0), (30.0, 0.0)]
    feature = multiview_features(views, size=16, channels=("depth", "normal"))
    prepared, rendered = prepare_sequence_features(dataset, tmp_path, feature, FrameSelection(num_frames=2),
                                                   dtype="float16")
    assert rendered == 4
    row = prepared[1]
    assert row["views"].shape == (2, 2, 4, 16, 16) and row["views"].dtype == np.float32
    fresh, _ = render_views(align(read_face(row["selected_frames"][1]), 90.0), views, 16, ("depth", "normal"))
    np.testing.assert_allclose(row["views"][1], fresh, atol=2e-3)
    selected, uncached = sequence_features(dataset[1]["frames"], feature, FrameSelection(num_frames=2))
    assert selected == row["selected_frames"]
    np.testing.assert_allclose(uncached["views"], row["views"], atol=2e-3)


def test_a_float16_cache_reads_as_stored_within_float16_precision(generated, tmp_path):
    root, _ = generated
    dataset = load_bp4d(root).select([0, 9])
    feature = multiview_features([(0.0, 0.0), (30.0, 0.0)], size=16, channels=("depth", "normal"))
    full, _ = prepare_sequence_features(dataset, tmp_path / "f32", feature, FrameSelection(num_frames=3))
    half, _ = prepare_sequence_features(dataset, tmp_path / "f16", feature, FrameSelection(num_frames=3),
                                        dtype="float16", as_stored=True)
    for index in range(2):
        stored, reference = half[index]["views"], full[index]["views"]
        assert stored.dtype == np.float16 and reference.dtype == np.float32 and stored.shape == reference.shape
        np.testing.assert_array_equal(stored, reference.astype(np.float16))  # the same values, rounded once
        np.testing.assert_allclose(stored.astype(np.float32), reference, rtol=1e-3, atol=1e-3)
    cache = FrameCache(tmp_path / "f16", feature, dtype="float16")
    frames = half[0]["selected_frames"]
    np.testing.assert_array_equal(cache.stack(frames)["views"], cache.stack(frames, as_stored=True)["views"])
    batch = FeatureCollator(["views"])([{"views": half[i]["views"], "labels": 0} for i in range(2)])
    assert batch["views"].dtype == torch.float32


def test_an_interrupted_render_resumes(generated, tmp_path):
    root, _ = generated
    dataset = load_4dme(root)
    counter = tmp_path / "calls"
    selection = FrameSelection(num_frames=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_sequence_features(dataset, tmp_path / "cache", CountingFeatures(counter, fail_after=3), selection)
    cache = FrameCache(tmp_path / "cache", CountingFeatures(counter))
    unique = {p for row in dataset for p in select_frames(row, selection)}
    assert sum(cache.has(p) for p in unique) == 3
    _, rendered = prepare_sequence_features(dataset, tmp_path / "cache", CountingFeatures(counter), selection)
    assert rendered == len(unique) - 3 and calls(counter) == 4 + len(unique) - 3


def test_bu4dfe_sequences_go_through_the_frame_cache(tmp_path):
    from facet_vlm.data import generate, load_bu4dfe

    generate(tmp_path / "data", subjects=1, formats=("bu4dfe",), sequence_frames=4, vertices=300, texture_size=32,
             progress=False)
    dataset = load_bu4dfe(tmp_path / "data").select([0, 1])
    feature = multiview_features([(0.0, 0.0)], size=8, channels=("depth",))
    prepared, rendered = prepare_sequence_features(dataset, tmp_path / "cache", feature, FrameSelection(3))
    assert rendered == 6 and prepared[0]["views"].shape == (3, 1, 1, 8, 8)
    assert prepared[0]["selected_frames"] == [dataset[0]["frames"][i] for i in (0, 2, 3)]


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt"])
def test_a_bad_frame_is_named(generated, tmp_path, damage):
    root, _ = generated
    shutil.copytree(root / "bp4d", tmp_path / "bp4d")
    dataset = load_bp4d(tmp_path / "bp4d").filter(lambda row: row["subject"] == "M001" and row["task"] == "T2")
    frame = Path(dataset[0]["frames"][2])
    if damage == "missing":
        frame.unlink()
    elif damage == "empty":
        frame.write_bytes(b"")
    else:
        frame.write_text("v 1 2 3\nv 2 3 4\nf 1 2 9\n")
    with pytest.raises(SequenceError, match=rf"{re.escape(str(frame))}: frame (file is {damage}|cannot be read)"):
        prepare_sequence_features(dataset, tmp_path / "cache", CountingFeatures(tmp_path / "c"),
                                  FrameSelection(num_frames=FRAMES))


def test_sequence_bench_reports_render_and_float16_read_figures():
    from helpers import run_command, script_main

    done = run_command(script_main("bench.py"), "sequence", "--frames", "4", "--views", "2", "--size", "16",
                       "--vertices", "1000", "--repeats", "1", "--dtype", "float16")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(4, 2, 7, 16, 16) (float16 cache)" in done.stdout
    for label in ("cached read (stacked, as stored)", "cached read + float32 tensor"):
        line = next(line for line in done.stdout.splitlines() if label in line)
        assert float(line.split("= ")[1].split("x")[0]) > 0


def test_frame_cache_dtype_argument_is_checked():
    from facet_vlm.arguments import DataArguments
    from facet_vlm.errors import ConfigError

    assert DataArguments(frame_cache_dtype="float16").frame_cache_dtype == "float16"
    with pytest.raises(ConfigError, match="frame_cache_dtype"):
        DataArguments(frame_cache_dtype="bfloat16")
