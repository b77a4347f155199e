"""The resumable feature cache: renders once, resumes after a crash, re-renders when the spec changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import trimesh
from datasets import Array2D

from facet_vlm.data.cache import multiview_features, point_features, prepare_features
from facet_vlm.geometry import render_views
from facet_vlm.io import read_face


class CountingFeatures:
    """The scan's centroid; every call appends a byte to `counter`, and call number `fail_after` + 1 crashes."""

    def __init__(self, counter: Path, fail_after: int | None = None):
        self.counter = counter
        self.fail_after = fail_after

    @property
    def spec(self) -> dict:
        return {"name": "centroid"}

    def features(self, dtype: str) -> dict:
        return {"centroid": Array2D((1, 3), dtype)}

    def __call__(self, face) -> dict[str, np.ndarray]:
        with open(self.counter, "ab") as handle:
            handle.write(b".")
        if self.fail_after is not None and self.counter.stat().st_size > self.fail_after:
            raise RuntimeError("simulated crash in the middle of a run")
        return {"centroid": face.vertices.mean(axis=0, keepdims=True)}


def centroid_and_extent(face) -> dict[str, np.ndarray]:
    """A plain function: the cache infers its output features from the first row."""
    return {"centroid": face.vertices.mean(axis=0), "extent": np.stack([face.vertices.min(0), face.vertices.max(0)])}


def calls(counter: Path) -> int:
    return counter.stat().st_size if counter.exists() else 0


def write_scans(folder: Path, count: int) -> datasets.Dataset:
    """`count` small coloured face-like meshes (mm, facing +z) as .ply, each shifted differently."""
    xs = np.linspace(-60.0, 60.0, 13)
    x, y = np.meshgrid(xs, xs)
    z = np.sqrt(np.maximum(100.0**2 - x**2 - y**2, 0.0)) - 100.0 + 20.0 * np.exp(-(x**2 + y**2) / 200.0)
    idx = np.arange(13 * 13).reshape(13, 13)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    paths = []
    for i in range(count):
        vertices = np.stack([x, y, z], -1).reshape(-1, 3) + np.array([i, -2.0 * i, 3.0 * i])
        colors = np.tile([40 * i % 255, 120, 200, 255], (len(vertices), 1)).astype(np.uint8)
        path = folder / f"scan_{i}.ply"
        trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False).export(path)
        paths.append(str(path))
    return datasets.Dataset.from_dict({"path": paths, "label": list(range(count))})


def test_second_call_renders_nothing_and_keeps_current_columns(tmp_path):
    rows = write_scans(tmp_path, 5)
    counter = tmp_path / "calls"
    first = prepare_features(rows, tmp_path / "cache", CountingFeatures(counter), shard_size=2)
    assert calls(counter) == 5
    relabelled = rows.map(lambda row: {"label": row["label"] + 10})
    second = prepare_features(relabelled, tmp_path / "cache", CountingFeatures(counter), shard_size=2)
    assert calls(counter) == 5
    for i, path in enumerate(rows["path"]):
        expected = read_face(path).vertices.mean(axis=0, keepdims=True)
        np.testing.assert_allclose(first[i]["centroid"], expected, rtol=1e-3, atol=1e-2)
        np.testing.assert_array_equal(second[i]["centroid"], first[i]["centroid"])
        assert second[i]["label"] == i + 10 and second[i]["path"] == path


def test_a_scan_rewritten_in_place_is_computed_again_not_served_stale_features(tmp_path):
    rows = write_scans(tmp_path, 3)
    counter = tmp_path / "calls"
    first = prepare_features(rows, tmp_path / "cache", CountingFeatures(counter), shard_size=2)
    assert calls(counter) == 3
    # New contents under the same file name (a corrected release, a re-export): scan 0 gets scan 2's geometry.
    other = tmp_path / "other"
    other.mkdir()
    write_scans(other, 3)
    shutil.copyfile(other / "scan_2.ply", tmp_path / "scan_0.ply")
    second = prepare_features(rows, tmp_path / "cache", CountingFeatures(counter), shard_size=2)
    assert calls(counter) == 6
    expected = read_face(rows["path"][0]).vertices.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(second[0]["centroid"], expected, rtol=1e-3, atol=1e-2)
    assert not np.allclose(second[0]["centroid"], first[0]["centroid"])
    np.testing.assert_array_equal(second[1]["centroid"], first[1]["centroid"])


def test_interrupted_run_resumes_without_redoing_finished_shards(tmp_path):
    count, shard_size, fail_after = 7, 2, 5
    rows = write_scans(tmp_path, count)
    counter = tmp_path / "calls"
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_features(rows, tmp_path / "cache", CountingFeatures(counter, fail_after), shard_size=shard_size)
    assert calls(counter) == fail_after + 1
    (folder,) = (tmp_path / "cache").iterdir()
    finished = fail_after // shard_size
    assert sorted(p.name for p in folder.glob("shard_*")) == [f"shard_{s:05d}" for s in range(finished)]
    assert not list(folder.glob(".tmp_*"))

    resumed = prepare_features(rows, tmp_path / "cache", CountingFeatures(counter), shard_size=shard_size)
    assert calls(counter) == fail_after + 1 + count - finished * shard_size
    assert len(resumed) == count
    for i, path in enumerate(rows["path"]):
        expected = read_face(path).vertices.mean(axis=0, keepdims=True)
        np.testing.assert_allclose(resumed[i]["centroid"], expected, rtol=1e-3, atol=1e-2)


def test_multiview_cache_matches_a_fresh_render_and_a_new_spec_renders_again(tmp_path):
    rows = write_scans(tmp_path, 3)
    views = [(0.0, 0.0), (30.0, 0.0)]
    cached = prepare_features(rows, tmp_path / "cache", multiview_features(views, size=16), num_proc=2, shard_size=2)
    assert cached.features["views"].shape == (2, 7, 16, 16) and cached.features["views"].dtype == "float32"
    for i, path in enumerate(rows["path"]):
        images, mask = render_views(read_face(path), views, size=16)
        np.testing.assert_allclose(cached[i]["views"], images, atol=1e-3)
        np.testing.assert_array_equal(cached[i]["view_mask"], mask)
    prepare_features(rows, tmp_path / "cache", multiview_features(views, size=8, channels=("depth",)))
    points = prepare_features(rows, tmp_path / "cache", point_features(n=32), dtype="float16")
    assert points[0]["points"].shape == (32, 9)
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_plain_feature_functions_get_inferred_features(tmp_path):
    rows = write_scans(tmp_path, 3)
    cached = prepare_features(rows, tmp_path / "cache", centroid_and_extent, shard_size=2)
    for i, path in enumerate(rows["path"]):
        expected = centroid_and_extent(read_face(path))
        np.testing.assert_allclose(cached[i]["centroid"], expected["centroid"], rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(cached[i]["extent"], expected["extent"], rtol=1e-3, atol=1e-1)


def test_dataloader_workers_get_the_cache_by_reference_not_a_copy(tmp_path):
    """The prepared dataset is memory-mapped Arrow: what a DataLoader worker receives (a pickle) names the shard
    files instead of holding the renders, and batches read through workers equal those read in-process."""
    import pickle

    import torch
    from torch.utils.data import DataLoader

    rows = write_scans(tmp_path, 6)
    prepared = prepare_features(rows, tmp_path / "cache", multiview_features(size=32), shard_size=2)
    render_bytes = sum(np.asarray(prepared[i]["views"]).nbytes for i in range(len(prepared)))
    assert len(pickle.dumps(prepared)) < render_bytes / 10

    def collate(batch):
        return torch.from_numpy(np.stack([row["views"] for row in batch]))

    in_process = list(DataLoader(prepared, batch_size=2, collate_fn=collate))
    with_workers = list(DataLoader(prepared, batch_size=2, collate_fn=collate, num_workers=2))
    for expected, got in zip(in_process, with_workers, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
