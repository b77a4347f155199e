"""The generator's variety switches for pretraining populations (issue 12): each changes what it should, nothing
else, and nothing at all when off."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from facet_vlm.data.face_model import NUISANCE_PRESETS, REMESH_JITTER, Nuisance, SubjectParams, sample_subject
from facet_vlm.data.synthetic import SyntheticSettings, generate, make_scan, subject_model
from facet_vlm.errors import ConfigError

TINY = {"vertices": 400, "texture_size": 32}
CLEAN = dict(noise_mm=0, holes=(0, 0), pose_deg=(0, 0, 0), translate_mm=0, au_jitter=0, au_leak=0, asymmetry=0,
             lighting=0, landmark_noise_mm=0)
VARIETY = {"shape_spread": 0.5, "texture_spread": 0.5, "vertex_range": (0.5, 1.5), "remesh_prob": 1.0,
           "decimate_prob": 1.0, "decimate_keep": (0.5, 0.6), "ripple_mm": 0.5, "light_deg": 30.0,
           "white_balance": 0.1}
GEOMETRY = {"half_width", "jaw", "head_depth", "eye_x", "eye_y", "nose_projection", "mouth_width", "chin_y"}
COLOURS = {"skin_rgb", "skin_tone"}


def _scan(nuisance: dict, expression: str = "happiness", index: int = 0, fmt: str = "bu3dfe"):
    return make_scan(index, expression, 4, SyntheticSettings(nuisance=nuisance, **TINY), fmt=fmt).face


def _same(a, b) -> bool:
    return a.num_vertices == b.num_vertices and np.array_equal(a.vertices, b.vertices) and np.array_equal(
        a.faces, b.faces) and np.array_equal(a.texture, b.texture)


def test_every_switch_at_its_off_value_leaves_scans_and_markers_unchanged():
    default, hard = Nuisance(), NUISANCE_PRESETS["hard"]
    for preset in ("default", "hard"):
        off = {"preset": preset, **{name: getattr(default, name) for name in VARIETY}}
        assert _same(_scan(preset, "fear", 1), _scan(off, "fear", 1))
        assert SyntheticSettings(nuisance=off).to_json() == SyntheticSettings(nuisance=preset).to_json()
    assert all(getattr(hard, name) == getattr(default, name) for name in VARIETY)


def test_shape_spread_widens_geometry_only_and_texture_spread_colours_only():
    def draw(index, **spread):
        return sample_subject(np.random.default_rng([0, index, 1]), "F", "WH", **spread)

    base, shaped, tinted = draw(0), draw(0, shape_spread=1.0), draw(0, texture_spread=1.0)
    for item in fields(SubjectParams):
        same_shape = np.array_equal(getattr(base, item.name), getattr(shaped, item.name))
        same_tint = np.array_equal(getattr(base, item.name), getattr(tinted, item.name))
        if item.name in GEOMETRY:
            assert not same_shape and same_tint, item.name
        if item.name in COLOURS:
            assert same_shape and not same_tint, item.name
    widths = [[draw(i, **spread).half_width for i in range(200)] for spread in ({}, {"shape_spread": 1.0})]
    assert 66.0 <= min(widths[0]) and max(widths[0]) <= 73.0
    assert min(widths[1]) < 65.0 and max(widths[1]) > 74.0  # [66, 73] widened by 3.5 mm on each side


def test_vertex_range_and_remeshing_change_the_mesh_not_the_face():
    plain = subject_model(3, SyntheticSettings(nuisance=CLEAN, **TINY))[1]
    counts = {subject_model(i, SyntheticSettings(nuisance={**CLEAN, "vertex_range": (0.5, 2.0)}, **TINY))[1]
              .mask.sum() for i in range(6)}
    assert len(counts) == 6 and min(counts) > 0.4 * 400 and max(counts) < 2.4 * 400
    remeshed = subject_model(3, SyntheticSettings(nuisance={**CLEAN, "remesh_prob": 1.0}, **TINY))[1]
    assert np.array_equal(remeshed.texture, plain.texture) and remeshed.params.half_width == plain.params.half_width
    # Every point moved inside its own grid cell; another triangulation; triangles still face the camera.
    step = plain.grid_x[0, 1] - plain.grid_x[0, 0]
    assert 0.2 * step < np.abs(remeshed.grid_x - plain.grid_x).max() <= REMESH_JITTER * step + 1e-9
    assert not np.array_equal(remeshed.faces, plain.faces)
    vertices = np.stack([remeshed.grid_x[remeshed.mask], remeshed.grid_y[remeshed.mask]], -1)
    a, b, c = (vertices[remeshed.faces[:, k]] for k in range(3))
    assert (np.cross(b - a, c - a) > 0).all() and len(remeshed.faces) > 1.7 * remeshed.mask.sum()
    settings = SyntheticSettings(nuisance={**CLEAN, "remesh_prob": 1.0}, **TINY)
    face = make_scan(3, "anger", 4, settings).face
    clean = make_scan(3, "anger", 4, SyntheticSettings(nuisance=CLEAN, **TINY)).face
    assert np.allclose(face.landmarks, clean.landmarks)  # the same face surface under another mesh
    some = [subject_model(i, SyntheticSettings(nuisance={**CLEAN, "remesh_prob": 0.5}, **TINY))[1] for i in range(8)]
    assert 0 < sum(not np.array_equal(m.faces, subject_model(i, SyntheticSettings(nuisance=CLEAN, **TINY))[1].faces)
                   for i, m in enumerate(some)) < 8


def test_decimation_coarsens_mesh_scans_only():
    settings = SyntheticSettings(nuisance={**CLEAN, "decimate_prob": 1.0, "decimate_keep": (0.5, 0.6)}, **TINY)
    clean = SyntheticSettings(nuisance=CLEAN, **TINY)
    for expression in ("anger", "sadness"):
        face, full = make_scan(0, expression, 4, settings).face, make_scan(0, expression, 4, clean).face
        assert 0.5 <= face.meta["decimated"] <= 0.6
        assert 0.49 * full.num_vertices <= face.num_vertices <= 0.61 * full.num_vertices
        assert np.isin(face.vertices.view("f4,f4,f4"), full.vertices.view("f4,f4,f4")).all()  # a subset
        assert np.array_equal(face.landmarks, full.landmarks)
    range_scan = make_scan(0, "anger", 4, settings, fmt="bosphorus")
    assert np.array_equal(range_scan.xyz_grid, make_scan(0, "anger", 4, clean, fmt="bosphorus").xyz_grid,
                          equal_nan=True)


def test_ripple_moves_depth_and_lighting_changes_texture_only():
    clean = _scan(CLEAN)
    rippled = _scan({**CLEAN, "ripple_mm": 1.0})
    assert np.array_equal(rippled.vertices[:, :2], clean.vertices[:, :2]) and np.array_equal(
        rippled.texture, clean.texture)
    change = np.abs(rippled.vertices[:, 2] - clean.vertices[:, 2])
    assert 0 < change.max() <= 1.0 + 1e-4
    grids = [make_scan(0, "happiness", 4, SyntheticSettings(nuisance=n, **TINY), fmt="bosphorus").xyz_grid
             for n in (CLEAN, {**CLEAN, "ripple_mm": 1.0})]
    assert np.array_equal(grids[0][..., :2], grids[1][..., :2], equal_nan=True)
    assert 0 < np.nanmax(np.abs(grids[1][..., 2] - grids[0][..., 2])) <= 1.0 + 1e-4
    for switch in ({"light_deg": 40.0}, {"white_balance": 0.2}):
        lit = _scan({**CLEAN, **switch})
        assert np.array_equal(lit.vertices, clean.vertices)
        assert np.abs(lit.texture.astype(float) - clean.texture).mean() > 1.0
    lit = _scan({**CLEAN, "light_deg": 40.0}).texture.astype(float)
    # Relighting shades one side more than the other (a mean colour shift would not).
    ratio = (lit + 1) / (clean.texture.astype(float) + 1)
    assert ratio.std() > 0.02


def test_pretrain_preset_generates_and_bad_values_raise(tmp_path):
    pretrain = Nuisance.preset("pretrain")
    assert pretrain.has_style and pretrain.shape_spread > 0 and pretrain.remesh_prob > 0
    summary = generate(tmp_path, subjects=3, intensities=1, include_neutral=False, progress=False,
                       nuisance="pretrain", **TINY)
    assert summary.scans["bu3dfe"] == 18
    vmin, _, vmax = summary.vertices["bu3dfe"]
    assert vmax > 1.5 * vmin  # density, decimation and holes vary the meshes
    for bad in ({"remesh_prob": 2.0}, {"decimate_keep": (0.0, 0.5)}, {"vertex_range": (2.0, 1.0)},
                {"white_balance": 1.0}, {"light_deg": 95.0}):
        with pytest.raises(ConfigError):
            Nuisance(**bad)
