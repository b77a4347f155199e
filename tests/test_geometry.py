"""Geometry: rendering against analytic surfaces, point sampling, alignment, region masks, contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

from facet_vlm import ConfigError, Face
from facet_vlm.geometry import align, region_masks, region_weights, render_views, sample_points, view_rotation
from facet_vlm.geometry.align import BND_GROUPS, SYMMETRY_MAP_SIZE, _height_map, _nearest, _symmetry_roll
from facet_vlm.geometry.render import pixel_grid, to_pixels
from facet_vlm.geometry.sheet import contact_sheet


def grid(n: int, half: float, x_min: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An n x n grid over [x_min or -half, half] x [-half, half]; triangles counter-clockwise seen from +z."""
    xs = np.linspace(-half if x_min is None else x_min, half, n)
    ys = np.linspace(-half, half, n)
    x, y = np.meshgrid(xs, ys)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return x.reshape(-1), y.reshape(-1), faces, idx


def plane(half: float = 0.8, n: int = 9, z: float = 0.0, **fields) -> Face:
    x, y, faces, _ = grid(n, half)
    return Face(np.stack([x, y, np.full_like(x, z)], 1), faces, **fields)


def face_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A mirror-symmetric face-like surface in mm: a sphere cap with a nose, eye sockets and lips."""
    cap = np.sqrt(np.maximum(120.0**2 - x**2 - y**2, 0.0)) - 120.0
    nose = 22.0 * np.exp(-(x**2 / (2 * 9.0**2) + (y - 8.0) ** 2 / (2 * 16.0**2)))
    eyes = -6.0 * np.exp(-((np.abs(x) - 32.0) ** 2 + (y - 35.0) ** 2) / (2 * 8.0**2))
    lips = 3.0 * np.exp(-(x**2 / (2 * 18.0**2) + (y + 35.0) ** 2 / (2 * 4.0**2)))
    return cap + nose + eyes + lips


STANDARD_XY = {
    "left_eye_outer": (45.0, 35.0), "left_eye_inner": (18.0, 35.0), "right_eye_inner": (-18.0, 35.0),
    "right_eye_outer": (-45.0, 35.0), "left_brow_inner": (15.0, 50.0), "left_brow_outer": (50.0, 52.0),
    "right_brow_inner": (-15.0, 50.0), "right_brow_outer": (-50.0, 52.0), "mouth_left": (25.0, -35.0),
    "mouth_right": (-25.0, -35.0), "upper_lip": (0.0, -30.0), "lower_lip": (0.0, -40.0),
}


def face_mesh(n: int = 97, half: float = 100.0) -> tuple[Face, np.ndarray]:
    """A face-like scan in mm (facing +z) with standard landmarks; also returns its true nose tip (top vertex)."""
    x, y, faces, _ = grid(n, half)
    vertices = np.stack([x, y, face_height(x, y)], 1)
    tip = vertices[np.argmax(vertices[:, 2])]
    names = ["nose_tip", *STANDARD_XY]
    xy = np.array([tip[:2], *STANDARD_XY.values()])
    landmarks = np.column_stack([xy, face_height(xy[:, 0], xy[:, 1])])
    colors = np.stack([np.abs(x) * 2.0, y + 100.0, np.full_like(x, 90.0)], 1).clip(0, 255)
    return Face(vertices, faces, colors=colors, landmarks=landmarks, landmark_names=names), tip


def posed(face: Face, yaw: float, pitch: float, roll: float, shift=(5.0, -12.0, 40.0)) -> Face:
    """The face rotated (roll about z, then yaw, then pitch) and moved: an arbitrary scanner pose."""
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    rotation = view_rotation(yaw, pitch) @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    move = lambda p: p.astype(np.float64) @ rotation.T + np.asarray(shift)
    return face.copy(vertices=move(face.vertices), landmarks=None if face.landmarks is None else move(face.landmarks))


def sphere(radius: float = 0.6) -> tuple[Face, float]:
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    longest_edge = float(mesh.edges_unique_length.max())
    return Face(mesh.vertices, mesh.faces), longest_edge


# ----------------------------------------------------------------------------------------------------- rendering


def test_sphere_depth_normals_and_mask_match_the_analytic_surface():
    radius, size = 0.6, 96
    face, edge = sphere(radius)
    images, mask = render_views(face, views=[(0, 0)], size=size, channels=("depth", "normal"), align_first=False)
    depth, normal, mask = images[0, 0], images[0, 1:], mask[0]
    x, y = pixel_grid(size)
    inner = x**2 + y**2 < (0.9 * radius) ** 2
    z = np.sqrt(np.maximum(radius**2 - x**2 - y**2, 0.0))
    # the mesh is inscribed: its surface lies at most the sag of a triangle inside the sphere
    sag = radius - np.sqrt(radius**2 - (edge / np.sqrt(3.0)) ** 2)
    cos_min = np.sqrt(1.0 - 0.9**2)
    assert np.all(mask[inner])
    np.testing.assert_allclose(depth[inner], (z[inner] + 1.0) / 2.0, atol=sag / cos_min / 2.0 + 1e-6)
    expected_normal = np.stack([x, y, z]) / radius
    assert np.all(np.sum(normal * expected_normal, axis=0)[inner] > np.cos(edge / radius))
    assert np.all(normal[2][mask] > 0)
    assert np.all(images[0][:, ~mask] == 0)
    radius_px = radius * size / 2.0
    area = np.pi * radius_px**2
    assert abs(mask.sum() - area) < np.pi * radius_px + 2.0 * sag / radius * area


def test_positive_yaw_turns_the_face_toward_its_left():
    assert view_rotation(30, 0) @ np.array([0.0, 0.0, 1.0]) == pytest.approx([0.5, 0.0, np.cos(np.radians(30))])
    assert (view_rotation(0, 20) @ np.array([0.0, 0.0, 1.0]))[1] > 0
    back = plane(half=0.5, n=5)
    patch = plane(half=0.05, n=3, z=0.5)
    scene = Face(np.concatenate([back.vertices, patch.vertices]),
                 np.concatenate([back.faces, patch.faces + back.num_vertices]))
    size = 128
    images, _ = render_views(scene, views=[(30, 0)], size=size, channels=("depth",), align_first=False)
    back_nearest_z = 0.5 * np.sin(np.radians(30))
    patch_farthest_z = 0.5 * np.cos(np.radians(30)) - 0.05
    x, _ = pixel_grid(size)
    on_patch = images[0, 0] > (0.5 * (back_nearest_z + patch_farthest_z) + 1.0) / 2.0
    assert on_patch.sum() > 4
    assert x[on_patch].mean() == pytest.approx(0.5 * np.sin(np.radians(30)), abs=2.0 * 2.0 / size)


def test_yaw_views_of_a_mirror_symmetric_face_are_mirror_images():
    x, y, faces, _ = grid(41, 100.0, x_min=0.0)
    half = np.stack([x, y, face_height(x, y)], 1) / 90.0
    colors = np.stack([x * 2.0, y + 100.0, np.full_like(x, 90.0)], 1).clip(0, 255)
    mirrored = half * np.array([-1.0, 1.0, 1.0])
    face = Face(np.concatenate([half, mirrored]), np.concatenate([faces, faces[:, ::-1] + len(half)]),
                colors=np.concatenate([colors, colors]))
    channels = ("texture", "depth", "normal")
    images, masks = render_views(face, views=[(30, 10), (-30, 10)], size=64, channels=channels, align_first=False)
    flipped = images[1][..., ::-1].copy()
    flipped[4] *= -1.0  # normal x changes sign in the mirror image
    assert np.mean(masks[0] != masks[1][:, ::-1]) < 1e-3
    both = masks[0] & masks[1][:, ::-1]
    assert both.sum() > 500
    np.testing.assert_allclose(images[0][:, both], flipped[:, both], atol=1e-4)


def test_uv_texture_lands_in_the_right_quadrant():
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[..., 2] = 255
    texture[:32, 32:] = (255, 0, 0)  # top-right quadrant of the image: uv (u > .5, v > .5) in VRML convention
    face = plane(half=0.8, n=9)
    face.uv = ((face.vertices[:, :2] + 0.8) / 1.6).astype(np.float32)
    face.texture = texture
    size = 64
    images, mask = render_views(face, views=[(0, 0)], size=size, channels=("texture",), align_first=False)
    x, y = pixel_grid(size)
    inside = (np.abs(x) < 0.75) & (np.abs(y) < 0.75)
    red = inside & (x > 0.05) & (y > 0.05)
    blue = inside & ((x < -0.05) | (y < -0.05))
    assert np.all(mask[0][inside])
    np.testing.assert_allclose(images[0][:, red].T, np.tile([1.0, 0.0, 0.0], (red.sum(), 1)), atol=1e-6)
    np.testing.assert_allclose(images[0][:, blue].T, np.tile([0.0, 0.0, 1.0], (blue.sum(), 1)), atol=1e-6)


def test_holes_render_background():
    x, y, faces, _ = grid(41, 0.8)
    vertices = np.stack([x, y, np.zeros_like(x)], 1)
    centroids = vertices[faces].mean(axis=1)
    face = Face(vertices, faces[np.hypot(centroids[:, 0], centroids[:, 1]) > 0.3])
    size = 64
    images, mask = render_views(face, views=[(0, 0)], size=size, align_first=False)
    px, py = pixel_grid(size)
    radius = np.hypot(px, py)
    hole, ring = radius < 0.25, (radius > 0.35) & (np.abs(px) < 0.75) & (np.abs(py) < 0.75)
    assert not mask[0][hole].any() and np.all(images[0][:, hole] == 0)
    assert mask[0][ring].all()


def test_untextured_meshes_use_vertex_colours_or_grey_and_depth_maps_z():
    colour = np.array([200, 100, 50], np.uint8)
    coloured = plane(z=0.2, colors=np.tile(colour, (81, 1)))
    bare = plane(z=0.2)
    size = 32
    for face, expected in ((coloured, colour / 255.0), (bare, np.full(3, 0.5))):
        images, mask = render_views(face, views=[(0, 0)], size=size, channels=("depth", "texture"), align_first=False)
        np.testing.assert_allclose(images[0, 0][mask[0]], (0.2 + 1.0) / 2.0, atol=1e-6)
        np.testing.assert_allclose(images[0, 1:][:, mask[0]].T, np.tile(expected, (mask[0].sum(), 1)), atol=1e-6)


def test_channel_subsets_are_slices_of_the_full_render():
    face, _ = face_mesh(n=41)
    full, mask = render_views(face, size=48)
    part, part_mask = render_views(face, size=48, channels=("normal", "depth"))
    assert full.shape == (5, 7, 48, 48) and full.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(mask, part_mask)
    np.testing.assert_array_equal(part, np.concatenate([full[:, 4:7], full[:, 3:4]], axis=1))
    assert 0.0 <= full[:, :4].min() and full[:, :4].max() <= 1.0
    with pytest.raises(ConfigError):
        render_views(face, channels=("texture", "colour"))


# -------------------------------------------------------------------------------------------------------- points


def test_sample_points_lie_on_the_sphere_and_are_deterministic():
    radius = 0.6
    face, edge = sphere(radius)
    points = sample_points(face, n=512, seed=3, align_first=False)
    assert points.shape == (512, 6) and points.dtype == np.float32
    sag = radius - np.sqrt(radius**2 - (edge / np.sqrt(3.0)) ** 2)
    distance = np.linalg.norm(points[:, :3], axis=1)
    assert np.all(distance <= radius + 1e-5) and np.all(distance >= radius - sag - 1e-5)
    np.testing.assert_allclose(np.linalg.norm(points[:, 3:], axis=1), 1.0, atol=1e-5)
    assert np.all(np.sum(points[:, 3:] * points[:, :3] / distance[:, None], axis=1) > np.cos(edge / radius))
    np.testing.assert_array_equal(points, sample_points(face, n=512, seed=3, align_first=False))
    assert not np.array_equal(points, sample_points(face, n=512, seed=4, align_first=False))


def test_farthest_point_sampling_spreads_points():
    face, _ = sphere()
    spread = sample_points(face, n=256, seed=0, oversample=4, align_first=False)[:, :3]
    random = sample_points(face, n=256, seed=0, oversample=1, align_first=False)[:, :3]

    def closest_pair(points: np.ndarray) -> float:
        distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
        return float(distance[np.triu_indices(len(points), 1)].min())

    assert closest_pair(spread) > 3.0 * closest_pair(random)


def test_sample_points_carry_texture_colour():
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32, 32:] = (255, 0, 0)
    face = plane(half=0.8, n=9)
    face.uv = ((face.vertices[:, :2] + 0.8) / 1.6).astype(np.float32)
    face.texture = texture
    points = sample_points(face, n=400, align_first=False)
    assert points.shape == (400, 9)
    red = (points[:, 0] > 0.05) & (points[:, 1] > 0.05)
    black = (points[:, 0] < -0.05) | (points[:, 1] < -0.05)
    np.testing.assert_allclose(points[red, 6:], np.tile([1.0, 0.0, 0.0], (red.sum(), 1)), atol=1e-6)
    np.testing.assert_allclose(points[black, 6:], 0.0, atol=1e-6)
    np.testing.assert_allclose(points[:, 3:6], np.tile([0.0, 0.0, 1.0], (400, 1)), atol=1e-6)


# ----------------------------------------------------------------------------------------------------- alignment


def _eye_centres(face: Face) -> tuple[np.ndarray, np.ndarray]:
    return (0.5 * (face.landmark("left_eye_outer") + face.landmark("left_eye_inner")),
            0.5 * (face.landmark("right_eye_outer") + face.landmark("right_eye_inner")))


def test_align_with_landmarks_is_pose_invariant():
    face, _ = face_mesh()
    reference = align(face)
    aligned = align(posed(face, yaw=25, pitch=-15, roll=30))
    assert aligned.meta["align"]["method"] == "landmarks"
    np.testing.assert_allclose(aligned.landmark("nose_tip"), 0.0, atol=1e-5)
    left, right = _eye_centres(aligned)
    assert left[0] > 0 > right[0]
    np.testing.assert_allclose((left - right)[1:], 0.0, atol=1e-5)
    assert np.linalg.norm(aligned.vertices, axis=1).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(aligned.vertices, reference.vertices, atol=1e-4)
    np.testing.assert_array_equal(aligned.faces, reference.faces)
    unnormalised = align(posed(face, 10, 5, -20), crop_radius=70.0, normalize=False)
    assert 60.0 < np.linalg.norm(unnormalised.vertices, axis=1).max() <= 70.0 + 1e-4
    assert unnormalised.meta["align"]["extent"] == 70.0
    assert align(aligned) is aligned


def test_align_without_landmarks_finds_nose_tip_and_roll_from_geometry():
    face, tip = face_mesh()
    anonymous = face.copy(landmark_names=[f"p{i}" for i in range(len(face.landmarks))])
    moved = posed(anonymous.copy(landmarks=np.vstack([anonymous.landmarks, tip])), yaw=15, pitch=10, roll=20)
    aligned = align(moved)
    assert aligned.meta["align"]["method"] == "geometry"
    names = face.landmark_names
    left = 0.5 * (aligned.landmarks[names.index("left_eye_outer")] + aligned.landmarks[names.index("left_eye_inner")])
    right = 0.5 * (aligned.landmarks[names.index("right_eye_outer")]
                   + aligned.landmarks[names.index("right_eye_inner")])
    assert np.linalg.norm(aligned.landmarks[-1]) * 90.0 < 3.0  # the true nose tip within 3 mm of the origin
    eye_line = left - right
    assert eye_line[0] > 0 and abs(np.degrees(np.arctan2(eye_line[1], eye_line[0]))) < 2.0


def _reference_roll(local: np.ndarray, faces: np.ndarray, radius: float) -> float:
    """The roll search as first written (NumPy, every grid angle scored): what the compiled search must reproduce."""
    size = SYMMETRY_MAP_SIZE
    zbuf = _height_map(local, faces, radius)
    covered = np.isfinite(zbuf)
    x, y = pixel_grid(size, radius)
    points, heights = np.stack([x[covered], y[covered]], axis=1), zbuf[covered]
    padded = np.pad(np.where(covered, zbuf, np.nan), 1, constant_values=np.nan)

    def asymmetry(angle: float) -> float:
        normal = np.array([np.cos(angle), np.sin(angle)])
        col, row = to_pixels(points - 2.0 * (points @ normal)[:, None] * normal, size, radius)
        col, row = np.clip(col - 0.5, -1.0, size), np.clip(row - 0.5, -1.0, size)
        c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
        fc, fr = col - c0, row - r0
        c0, r0 = c0 + 1, r0 + 1
        c1, r1 = np.minimum(c0 + 1, size + 1), np.minimum(r0 + 1, size + 1)
        top = padded[r0, c0] * (1.0 - fc) + padded[r0, c1] * fc
        bottom = padded[r1, c0] * (1.0 - fc) + padded[r1, c1] * fc
        difference = np.abs(top * (1.0 - fr) + bottom * fr - heights)
        return float(np.where(np.isnan(difference), 0.1 * radius, np.minimum(difference, 0.1 * radius)).mean())

    coarse = np.arange(-np.radians(45.0), np.radians(45.0) + 1e-9, np.radians(3.0))
    best = coarse[int(np.argmin([asymmetry(a) for a in coarse]))]
    fine = best + np.radians(np.arange(-3.0, 3.01, 0.25))
    return float(fine[int(np.argmin([asymmetry(a) for a in fine]))])


@pytest.mark.parametrize("roll, noise", [(0.0, 0.0), (17.0, 0.0), (-38.0, 0.0), (7.3, 0.0), (-21.0, 0.3), (4.0, 0.6)])
def test_roll_search_matches_the_reference_and_finds_the_true_roll(roll, noise):
    face, tip = face_mesh()
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    local = (face.vertices.astype(np.float64) - tip) @ rotation.T
    local += np.random.default_rng(int(roll) + 50).normal(0.0, noise, local.shape)
    found = _symmetry_roll(local, face.faces, 90.0)
    assert found == pytest.approx(_reference_roll(local, face.faces, 90.0), abs=1e-12)
    if noise == 0.0:  # noisy heights move the optimum by a few degrees, in the reference as much as here
        assert abs(np.degrees(found) - roll) <= 0.25


def test_nearest_neighbours_match_a_tree_over_all_points():
    rng = np.random.default_rng(3)
    points = np.column_stack([rng.uniform(-50, 50, (5000, 2)), rng.normal(0, 5, 5000)])
    for rows in (np.argsort(points[:, 2])[-64:], rng.choice(5000, 64, replace=False), np.array([7])):
        found = _nearest(points, rows, 16)
        expected = cKDTree(points).query(points[rows], k=16)[0]
        np.testing.assert_array_equal(np.sort(np.linalg.norm(points[found] - points[rows, None], axis=2), axis=1),
                                      np.sort(expected, axis=1))


def _bnd_landmarks(swap_eyes: bool) -> np.ndarray:
    """BU-3DFE-like 83 points: contours around each feature of the face mesh, in the published group order."""
    def ring(cx: float, cy: float, rx: float, ry: float, k: int) -> np.ndarray:
        t = np.linspace(0.0, 2 * np.pi, k, endpoint=False)
        return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)])

    sides = (-32.0, 32.0) if not swap_eyes else (32.0, -32.0)
    groups = {"eye_a": ring(sides[0], 35, 13, 5, 8), "eye_b": ring(sides[1], 35, 13, 5, 8),
              "brow_a": ring(sides[0], 51, 17, 2, 10), "brow_b": ring(sides[1], 51, 17, 2, 10),
              "nose": ring(0, 5, 15, 12, 12), "mouth": ring(0, -35, 25, 6, 20)}
    xy = np.concatenate([*(groups[g] for g in BND_GROUPS), ring(0, 0, 80, 95, 15)])
    return np.column_stack([xy, face_height(xy[:, 0], xy[:, 1])])


@pytest.mark.parametrize("swap_eyes", [False, True])
def test_align_with_bu3dfe_bnd_points(swap_eyes):
    face, tip = face_mesh()
    bnd = np.vstack([_bnd_landmarks(swap_eyes), tip])
    names = [f"bnd_{i:02d}" for i in range(83)] + ["true_tip"]
    aligned = align(posed(face.copy(landmarks=bnd, landmark_names=names), yaw=-20, pitch=10, roll=-25))
    assert aligned.meta["align"]["method"] == "bnd"
    # the tip is the most protruding point along the eyes-mouth normal, a few degrees off the mesh's own z
    assert aligned.vertices[:, 2].max() * 90.0 < 0.5
    assert np.linalg.norm(aligned.landmark("true_tip")) * 90.0 < 3.0
    subject_left = slice(8, 16) if not swap_eyes else slice(0, 8)
    subject_right = slice(0, 8) if not swap_eyes else slice(8, 16)
    eye_line = aligned.landmarks[subject_left].mean(axis=0) - aligned.landmarks[subject_right].mean(axis=0)
    assert eye_line[0] > 0
    np.testing.assert_allclose(eye_line[1:], 0.0, atol=1e-5)


# -------------------------------------------------------------------------------------------------- region masks


def _pixel(point: np.ndarray, size: int) -> tuple[int, int]:
    return int((1.0 - point[1]) / 2.0 * size), int((point[0] + 1.0) / 2.0 * size)


def test_region_masks_lie_on_the_landmarks():
    face, _ = face_mesh()
    aligned = align(posed(face, 10, -5, 15))
    size = 96
    masks = region_masks(aligned, size=size)
    assert masks.shape == (4, size, size) and masks.dtype == np.float32
    assert 0.0 <= masks.min() and masks.max() <= 1.0
    left, right = _eye_centres(aligned)
    anchors = {
        "eyes": [left, right],
        "brows": [0.5 * (aligned.landmark(f"{s}_brow_inner") + aligned.landmark(f"{s}_brow_outer"))
                  for s in ("left", "right")],
        "nose": [aligned.landmark("nose_tip")],
        "mouth": [0.5 * (aligned.landmark("mouth_left") + aligned.landmark("mouth_right"))],
    }
    for r, region in enumerate(("eyes", "brows", "nose", "mouth")):
        for point in anchors[region]:
            assert masks[r][_pixel(point, size)] == 1.0
        for other, points in anchors.items():
            if other != region:
                assert all(masks[r][_pixel(p, size)] < 0.5 for p in points), (region, other)
    hard = region_masks(aligned, size=size, sigma=0.0)
    assert set(np.unique(hard)) == {0.0, 1.0}


def test_region_masks_from_template_and_bnd_contours_are_ordered_top_to_bottom():
    face, tip = face_mesh()
    bare = Face(face.vertices, face.faces)
    bnd = face.copy(landmarks=_bnd_landmarks(False), landmark_names=[f"bnd_{i:02d}" for i in range(83)])
    size = 64
    for scan in (bare, bnd):
        masks = region_masks(scan, size=size)
        rows = np.arange(size)[:, None] * np.ones((1, size))
        centre_row = [(m * rows).sum() / m.sum() for m in masks]
        assert centre_row[1] < centre_row[0] < centre_row[2] < centre_row[3]  # brows, eyes, nose, mouth
        np.testing.assert_allclose(masks[0], masks[0][:, ::-1], atol=0.05)


def test_region_cropped_points_cover_only_the_regions_and_more_densely():
    face, _ = face_mesh()
    aligned = align(posed(face, 10, -5, 15))
    margin = 0.05
    whole = sample_points(aligned, n=400, seed=0)
    mouth = sample_points(aligned, n=400, seed=0, regions=["mouth"], region_margin=margin)
    both = sample_points(aligned, n=400, seed=0, regions=["brows", "mouth"], region_margin=margin)
    # every cropped point lies in (within the margin of, up to a triangle's size) the regions' ellipses
    near_mouth = region_weights(aligned, mouth[:, :2], ["mouth"], sigma=2 * margin)
    assert near_mouth.min() >= np.exp(-0.5)
    assert region_weights(aligned, whole[:, :2], ["mouth"], sigma=2 * margin).min() < 0.01
    # the same number of points over a smaller area: closer together
    spacing = [float(np.median(cKDTree(p[:, :3]).query(p[:, :3], k=2)[0][:, 1])) for p in (whole, mouth)]
    assert spacing[1] < 0.5 * spacing[0]
    # two regions: both are covered, and the two-region cloud is the union (nothing between brows and mouth)
    upper = both[:, 1] > aligned.landmark("nose_tip")[1]
    assert 0.2 < upper.mean() < 0.8
    brow_y = max(aligned.landmark(f"{s}_brow_inner")[1] for s in ("left", "right"))
    mouth_y = aligned.landmark("upper_lip")[1]
    assert not np.any((both[:, 1] < brow_y - 0.3) & (both[:, 1] > mouth_y + 0.3))
    with pytest.raises(ConfigError, match="regions"):
        sample_points(aligned, n=10, regions=["ears"])
    with pytest.raises(ConfigError, match="region_margin"):
        sample_points(aligned, n=10, regions=["mouth"], region_margin=0.0)


def test_contact_sheet_writes_a_labelled_grid(tmp_path):
    face, _ = face_mesh(n=41)
    path = contact_sheet(face, tmp_path / "sheet" / "views.png", size=32)
    with Image.open(path) as image:
        width, height = image.size
    assert path.exists() and width > 4 * 32 and height > 5 * 32
