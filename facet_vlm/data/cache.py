"""A resumable on-disk cache of rendered features, built with ``datasets``.

:func:`prepare_features` reads every row's scan with :func:`facet_vlm.io.read_face`, runs a feature function on it
through ``datasets.Dataset.map`` and saves the results shard by shard under ``cache_dir/<fingerprint>/shard_XXXXX``
(``save_to_disk`` into a temporary folder, then an atomic rename), so that

* a second call with the same spec and rows renders nothing: it loads the shards (memory-mapped Arrow files);
* an interrupted run (crash, Ctrl-C, a killed job) resumes: finished shards are kept, a half-written one never
  looks finished;
* a changed spec (views, size, channels, number of points, dtype, shard size) or a changed list of paths gets a new
  fingerprint, hence a fresh folder.

Only the feature columns are cached; they are joined to the dataset's current columns on the way out, so labels and
other metadata can change without re-rendering.

Storage dtype, measured with ``scripts/bench.py render`` (5 views x 7 channels x 224², a 15k-triangle textured .wrl
scan, median CPU time on the shared 2-core machine): a fresh read_face + align + render takes ~78 ms per scan
(read 24, align 40, render 13); reading the cached row in numpy format takes 2-4.5 ms stored as float32 (18-35x,
depending on the load of the machine) and 6-8.5 ms stored as float16 (9-12x; datasets converts it to float32 on the
way out), so float32 is the default and float16 the option when disk matters (3.5 instead of 7 MB per scan). The
torch format reads slower (~18 ms, 4x: it copies through ``torch.tensor``); read numpy rows and wrap them with
``torch.from_numpy`` in the collator instead. :class:`MultiviewFeatures`
stores its view masks as 0/1 floats too: an Arrow bool column of that size reads back slower than the views.

The feature functions below are small picklable objects (needed for ``num_proc > 1``) with a ``spec`` (what the
fingerprint covers) and ``features(dtype)`` (the ``datasets.Features`` of their outputs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Array2D, Array3D, Array4D, Array5D, Features, Value

from ..errors import ConfigError, FacetVLMError
from ..face import Face
from ..geometry.align import align
from ..geometry.masks import REGION_NAMES, region_masks
from ..geometry.points import sample_points
from ..geometry.render import DEFAULT_VIEWS, num_channels, render_views

CACHE_FORMAT_VERSION = 1
FeatureFn = Callable[[Face], dict[str, np.ndarray]]
_ARRAY_TYPES = {2: Array2D, 3: Array3D, 4: Array4D, 5: Array5D}


def _storage_dtype(array_dtype: np.dtype, float_dtype: str) -> str:
    """Floating arrays are stored as `float_dtype`; integers and booleans keep their dtype."""
    return float_dtype if np.issubdtype(array_dtype, np.floating) else np.dtype(array_dtype).name


class MultiviewFeatures:
    """Feature function: ``{"views": (V, C, H, W), "view_mask": (V, H, W)}`` from :func:`render_views`.

    The mask is stored like the views, as 0/1 floats (``view_mask > 0.5`` gives it back as bool).
    """

    def __init__(self, views: Sequence[tuple[float, float]] | None = None, size: int = 224,
                 channels: Sequence[str] = ("texture", "depth", "normal"), crop_radius: float = 90.0):
        self.views = tuple((float(y), float(p)) for y, p in (DEFAULT_VIEWS if views is None else views))
        self.size = int(size)
        self.channels = tuple(channels)
        self.crop_radius = float(crop_radius)
        self.num_channels = num_channels(self.channels)

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "multiview", "views": [list(v) for v in self.views], "size": self.size,
                "channels": list(self.channels), "crop_radius": self.crop_radius}

    def features(self, dtype: str = "float32") -> dict[str, Any]:
        v, s = len(self.views), self.size
        return {"views": Array4D((v, self.num_channels, s, s), dtype), "view_mask": Array3D((v, s, s), dtype)}

    def __call__(self, face: Face) -> dict[str, np.ndarray]:
        images, mask = render_views(align(face, self.crop_radius), self.views, self.size, self.channels)
        return {"views": images, "view_mask": mask}


class PointFeatures:
    """Feature function: ``{"points": float (n, 9)}`` (xyz, normal, rgb) from :func:`sample_points`.

    With ``color=True`` a scan without texture or colours gets rgb = 0.5 so that every row has 9 columns;
    ``color=False`` gives (n, 6) for all scans.
    """

    def __init__(self, n: int = 4096, seed: int = 0, oversample: int = 4, color: bool = True,
                 crop_radius: float = 90.0):
        self.n, self.seed, self.oversample = int(n), int(seed), int(oversample)
        self.color = bool(color)
        self.crop_radius = float(crop_radius)

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "points", "n": self.n, "seed": self.seed, "oversample": self.oversample, "color": self.color,
                "crop_radius": self.crop_radius}

    def features(self, dtype: str = "float32") -> dict[str, Any]:
        return {"points": Array2D((self.n, 9 if self.color else 6), dtype)}

    def __call__(self, face: Face) -> dict[str, np.ndarray]:
        points = sample_points(align(face, self.crop_radius), self.n, self.seed, self.oversample)
        if not self.color:
            points = points[:, :6]
        elif points.shape[1] == 6:
            points = np.concatenate([points, np.full((self.n, 3), 0.5, np.float32)], axis=1)
        return {"points": points}


class RegionMaskFeatures:
    """Feature function: ``{"region_masks": float (R, H, W)}`` from :func:`region_masks`."""

    def __init__(self, size: int = 224, regions: Sequence[str] = REGION_NAMES, sigma: float = 0.03,
                 crop_radius: float = 90.0):
        self.size, self.regions, self.sigma = int(size), tuple(regions), float(sigma)
        self.crop_radius = float(crop_radius)

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "region_masks", "size": self.size, "regions": list(self.regions), "sigma": self.sigma,
                "crop_radius": self.crop_radius}

    def features(self, dtype: str = "float32") -> dict[str, Any]:
        return {"region_masks": Array3D((len(self.regions), self.size, self.size), dtype)}

    def __call__(self, face: Face) -> dict[str, np.ndarray]:
        return {"region_masks": region_masks(align(face, self.crop_radius), self.size, self.regions, self.sigma)}


class CombinedFeatures:
    """Several feature functions over one alignment of the face (their output names must differ)."""

    def __init__(self, *parts: Any):
        if not parts:
            raise ConfigError("combined_features needs at least one feature function")
        radii = {getattr(p, "crop_radius", 90.0) for p in parts}
        if len(radii) > 1:
            raise ConfigError(f"combined feature functions use different crop radii {sorted(radii)}")
        self.parts = parts
        self.crop_radius = radii.pop()

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "combined", "parts": [spec_of(p) for p in self.parts]}

    def features(self, dtype: str = "float32") -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for part in self.parts:
            merged.update(part.features(dtype))
        return merged

    def __call__(self, face: Face) -> dict[str, np.ndarray]:
        aligned = align(face, self.crop_radius)
        merged: dict[str, np.ndarray] = {}
        for part in self.parts:
            merged.update(part(aligned))
        return merged


def multiview_features(views: Sequence[tuple[float, float]] | None = None, size: int = 224,
                       channels: Sequence[str] = ("texture", "depth", "normal"),
                       crop_radius: float = 90.0) -> MultiviewFeatures:
    """Rendered views and their masks (see :class:`MultiviewFeatures`)."""
    return MultiviewFeatures(views, size, channels, crop_radius)


def point_features(n: int = 4096, seed: int = 0, oversample: int = 4, color: bool = True,
                   crop_radius: float = 90.0) -> PointFeatures:
    """Surface point clouds (see :class:`PointFeatures`)."""
    return PointFeatures(n, seed, oversample, color, crop_radius)


def region_mask_features(size: int = 224, regions: Sequence[str] = REGION_NAMES, sigma: float = 0.03,
                         crop_radius: float = 90.0) -> RegionMaskFeatures:
    """Frontal-view region masks (see :class:`RegionMaskFeatures`)."""
    return RegionMaskFeatures(size, regions, sigma, crop_radius)


def combined_features(*parts: Any) -> CombinedFeatures:
    """Several feature functions computed from one alignment, e.g. views + points + region masks."""
    return CombinedFeatures(*parts)


def spec_of(feature_fn: Any) -> dict[str, Any]:
    """What identifies a feature function in a cache fingerprint: its ``spec``, else its qualified name."""
    spec = getattr(feature_fn, "spec", None)
    if spec is not None:
        return spec
    owner = feature_fn if hasattr(feature_fn, "__qualname__") else type(feature_fn)
    return {"function": f"{owner.__module__}.{owner.__qualname__}"}


def infer_features(outputs: dict[str, np.ndarray], dtype: str) -> dict[str, Any]:
    """The `datasets` feature types that store ``outputs`` (name -> array of one row): scalars and vectors as values
    and lists, 2-5 dimensional arrays as fixed-shape ``Array2D`` .. ``Array5D``, which read back as one contiguous
    array per batch (nested lists are converted element by element, far slower). Floating arrays are stored as
    ``dtype``."""
    features: dict[str, Any] = {}
    for name, value in outputs.items():
        value = np.asarray(value)
        storage = _storage_dtype(value.dtype, dtype)
        if value.ndim == 0:
            features[name] = Value(storage)
        elif value.ndim == 1:
            features[name] = datasets.List(Value(storage), length=len(value))
        elif value.ndim in _ARRAY_TYPES:
            features[name] = _ARRAY_TYPES[value.ndim](value.shape, storage)
        else:
            raise ConfigError(f"feature {name!r} has {value.ndim} dimensions; at most 5 can be cached")
    return features


def one_torch_thread_in_worker(parent_pid: int) -> None:
    """Called by a ``Dataset.map`` function on each row: in a worker process (``--num_proc`` > 1; its pid differs
    from `parent_pid`, the process that made the function), torch runs on one thread, as in a torch ``DataLoader``
    worker. A worker is forked; when the parent had already run torch's OpenMP thread pool (a model trained earlier
    in the same process, as in ``bench.py compare``), the child's first parallel torch op waits forever for that pool
    (seen: MTCNN's ``load_state_dict`` in both workers, the map stuck at 0 rows). The parent keeps its threads."""
    if os.getpid() != parent_pid:
        import torch

        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)


class _RowMapper:
    """The picklable per-row function given to ``Dataset.map``: read the scan, run the feature function, cast."""

    def __init__(self, feature_fn: FeatureFn, path_column: str, features: dict[str, Any]):
        self.feature_fn = feature_fn
        self.path_column = path_column
        self.features = features
        self.parent_pid = os.getpid()

    def __call__(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        from ..io import read_face

        one_torch_thread_in_worker(self.parent_pid)
        path = row[self.path_column]
        outputs = self.feature_fn(read_face(path))
        if set(outputs) != set(self.features):
            raise FacetVLMError(f"feature function returned {sorted(outputs)}, expected {sorted(self.features)}", path)
        cast = {}
        for name, value in outputs.items():
            value = np.asarray(value)
            feature = self.features[name]
            shape = getattr(feature, "shape", None)
            if shape is not None and tuple(value.shape) != tuple(shape):
                raise FacetVLMError(f"feature {name!r} has shape {value.shape}, the cache expects {tuple(shape)}; "
                                    "give every scan the same output shape", path)
            dtype = getattr(feature, "dtype", None)
            cast[name] = value if dtype is None else value.astype(dtype)
        return cast


def _file_stamp(path: str) -> list[int] | None:
    """(size, modification time in ns) of a scan file, or None for a path that is not one (a folder's stamp only
    changes when entries are added or removed)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [int(status.st_size), int(status.st_mtime_ns)]


def _fingerprint(spec: dict[str, Any], paths: list[str], dtype: str, shard_size: int) -> str:
    """The cache folder's name: the feature spec, storage settings, every scan's path and its size and modification
    time, so that a scan rewritten in place (new contents under the same name) is computed again instead of being
    served its old features (the test ``make`` uses; hashing every file's contents would read the whole data set
    on each run)."""
    blob = json.dumps({"version": CACHE_FORMAT_VERSION, "spec": spec, "dtype": dtype, "shard_size": shard_size,
                       "paths": paths, "stamps": [_file_stamp(path) for path in paths]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a temporary folder it left is in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary folders left by runs that died (their process id is no longer alive)."""
    for tmp in folder.glob(".tmp_*"):
        pid = tmp.name.split("_")[-2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def prepare_features(
    dataset: datasets.Dataset,
    cache_dir: str | os.PathLike,
    feature_fn: FeatureFn,
    *,
    spec: dict[str, Any] | None = None,
    path_column: str = "path",
    num_proc: int = 1,
    shard_size: int = 64,
    dtype: str = "float32",
    desc: str | None = None,
) -> datasets.Dataset:
    """Compute (or load from the cache) features of every row's scan and join them to the dataset.

    Args:
        dataset: rows with a column of scan paths that :func:`facet_vlm.io.read_face` reads.
        cache_dir: root folder of the cache; this call uses ``cache_dir/<fingerprint>/``.
        feature_fn: ``feature_fn(face) -> {name: array}`` with the same shapes for every scan, e.g.
            :func:`multiview_features`; picklable when ``num_proc > 1``.
        spec: what identifies the feature function in the fingerprint; default ``feature_fn.spec`` (the ready
            feature functions have one) or its qualified name.
        path_column: the column holding the scan paths.
        num_proc: worker processes for ``Dataset.map``; each works on one shard at a time.
        shard_size: rows per saved shard (the unit of resumption).
        dtype: storage dtype of floating features: "float32" (the default: fastest to read) or "float16" (half
            the disk, read back as float32 about 2-3x slower).
        desc: progress-bar label.

    Returns:
        The dataset with the feature columns added (replacing same-named columns), feature columns formatted as
        numpy arrays (floating ones come back as float32; ``.with_format("torch")`` works too but reads slower).
    """
    if path_column not in dataset.column_names:
        raise ConfigError(f"dataset has no column {path_column!r} (columns: {dataset.column_names})")
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"dtype={dtype!r}: use 'float16' or 'float32'")
    if shard_size < 1 or num_proc < 1:
        raise ConfigError(f"shard_size={shard_size}, num_proc={num_proc}: both must be at least 1")
    paths = [str(p) for p in dataset[path_column]]
    spec = spec if spec is not None else spec_of(feature_fn)
    fingerprint = _fingerprint(spec, paths, dtype, shard_size)
    folder = Path(cache_dir) / fingerprint
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)
    num_shards = max(1, -(-len(paths) // shard_size))
    missing = [s for s in range(num_shards) if not (folder / _shard_name(s)).is_dir()] if paths else []

    if missing:
        if hasattr(feature_fn, "features"):
            features = feature_fn.features(dtype)
        else:
            from ..io import read_face

            features = infer_features(feature_fn(read_face(paths[0])), dtype)
        info = {"spec": spec, "dtype": dtype, "shard_size": shard_size, "num_rows": len(paths),
                "features": sorted(features)}
        (folder / "spec.json").write_text(json.dumps(info, indent=2, default=str))
        mapper = _RowMapper(feature_fn, path_column, features)
        paths_only = dataset.select_columns([path_column]).flatten_indices()
        for start in range(0, len(missing), num_proc):
            _compute_shards(paths_only, folder, fingerprint, missing[start:start + num_proc], shard_size, mapper,
                            Features(features), desc or f"features {fingerprint}")

    if not paths:
        return dataset
    cached = datasets.concatenate_datasets([datasets.load_from_disk(str(folder / _shard_name(s)))
                                            for s in range(num_shards)])
    names = cached.column_names
    base = dataset.remove_columns([c for c in names if c in dataset.column_names])
    joined = datasets.concatenate_datasets([base.flatten_indices() if base._indices else base, cached], axis=1)
    return joined.with_format("numpy", columns=names, output_all_columns=True)


def _compute_shards(paths_only: datasets.Dataset, folder: Path, fingerprint: str, shards: list[int],
                    shard_size: int, mapper: _RowMapper, features: Features, desc: str) -> None:
    """Map a batch of shards with one worker process per shard, then save each shard atomically."""
    total = len(paths_only)
    ranges = [range(s * shard_size, min((s + 1) * shard_size, total)) for s in shards]
    rows = paths_only.select([i for r in ranges for i in r])
    work = folder / f".tmp_{uuid.uuid4().hex}_{os.getpid()}_work"
    work.mkdir()
    try:
        mapped = rows.map(mapper, remove_columns=rows.column_names, features=features, load_from_cache_file=False,
                          cache_file_name=str(work / "map.arrow"), num_proc=len(shards) if len(shards) > 1 else None,
                          new_fingerprint=f"{fingerprint}_{shards[0]}_{len(shards)}", desc=desc)
        offset = 0
        for shard, r in zip(shards, ranges):
            tmp = folder / f".tmp_{uuid.uuid4().hex}_{os.getpid()}_shard"
            mapped.select(range(offset, offset + len(r))).save_to_disk(str(tmp))
            offset += len(r)
            try:
                tmp.rename(folder / _shard_name(shard))
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
