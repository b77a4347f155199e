"""A resumable per-frame feature cache for sequences: every frame is rendered once per feature spec.

`FrameCache` stores the features of one frame file (e.g. the (V, C, H, W) views of :class:`MultiviewFeatures`)
under ``cache_dir/frames_<spec fingerprint>/<kk>/<frame key>/<name>.npy``. The frame key hashes the frame's absolute
path, size and modification time, so

* a frame selected by several samplings or configs with the same feature spec (uniform T=8 and T=16, the apex
  baseline, onset–apex–offset) is rendered once and shared;
* a frame file that changes on disk gets a new key (re-rendered); a changed spec gets a new folder;
* an interrupted run resumes: each frame is written into a temporary folder and renamed when complete, so a
  half-written frame never looks finished, and temporaries of dead processes are removed.

`prepare_sequence_features` selects each row's T frames (`facet_vlm.data.sequences.select_frames`), renders the
missing ones and returns the dataset with a lazy transform that stacks the cached frames of a row into
``(T, *feature_shape)`` arrays, e.g. ``views`` (T, V, C, H, W), without storing a second copy per row.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FacetVLMError
from ..progress import progress_bar
from .cache import pid_alive, spec_of

FRAME_CACHE_VERSION = 1


class FrameCache:
    """Per-frame features of one feature function, cached on disk (see the module docstring).

    Args:
        cache_dir: root folder; this cache uses ``cache_dir/frames_<fingerprint>/``.
        feature_fn: ``feature_fn(face) -> {name: array}`` (e.g. `multiview_features(...)`); picklable for
            ``num_proc > 1``.
        spec: what identifies `feature_fn` in the fingerprint; default ``feature_fn.spec`` or its qualified name.
        dtype: storage dtype of floating features, "float32" or "float16" (read back as float32).
    """

    def __init__(self, cache_dir: str | os.PathLike, feature_fn: Any, spec: dict[str, Any] | None = None,
                 dtype: str = "float32"):
        if dtype not in ("float16", "float32"):
            raise ConfigError(f"dtype={dtype!r}: use 'float16' or 'float32'")
        self.feature_fn = feature_fn
        self.spec = spec if spec is not None else spec_of(feature_fn)
        self.dtype = dtype
        blob = json.dumps({"version": FRAME_CACHE_VERSION, "spec": self.spec, "dtype": dtype}, sort_keys=True,
                          default=str)
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.folder = Path(cache_dir) / f"frames_{self.fingerprint}"

    def key(self, path: str | os.PathLike) -> str:
        """The frame's cache key: a hash of its absolute path, size and modification time.

        Raises:
            SequenceError: the frame file is missing or empty.
        """
        from .sequences import SequenceError

        path = Path(path)
        try:
            stat = path.stat()
        except OSError:
            raise SequenceError("frame file is missing", path) from None
        if not path.is_file():
            raise SequenceError("frame path is not a file", path)
        if stat.st_size == 0:
            raise SequenceError("frame file is empty", path)
        blob = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}"
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def location(self, path: str | os.PathLike) -> Path:
        key = self.key(path)
        return self.folder / key[:2] / key

    def has(self, path: str | os.PathLike) -> bool:
        return self.location(path).is_dir()

    def render(self, path: str | os.PathLike) -> Path:
        """Compute and store the features of one frame (atomically); return its folder. Done frames are kept."""
        from .sequences import read_sequence_frame

        target = self.location(path)
        if target.is_dir():
            return target
        outputs = self.feature_fn(read_sequence_frame(path))
        tmp = self.folder / f".tmp_{uuid.uuid4().hex}_{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            for name, value in outputs.items():
                value = np.asarray(value)
                if np.issubdtype(value.dtype, np.floating):
                    value = value.astype(self.dtype)
                np.save(tmp / f"{name}.npy", value)
            (tmp / "frame.json").write_text(json.dumps({"path": os.path.abspath(path)}))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(target)
            except OSError:  # another process finished the same frame first
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def load(self, path: str | os.PathLike) -> dict[str, np.ndarray]:
        """The cached features of one frame (floating ones as float32)."""
        folder = self.location(path)
        if not folder.is_dir():
            raise FacetVLMError("frame is not in the cache yet; call ensure() first", path)
        out = {}
        for file in sorted(folder.glob("*.npy")):
            value = np.load(file)
            out[file.stem] = value.astype(np.float32) if value.dtype == np.float16 else value
        return out

    def ensure(self, paths: Sequence[str | os.PathLike], num_proc: int = 1, progress: bool = False) -> int:
        """Render every frame of `paths` that is not cached yet; return how many were rendered."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob(".tmp_*"):
            pid = tmp.name.rsplit("_", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
        spec_file = self.folder / "spec.json"
        if not spec_file.is_file():
            spec_file.write_text(json.dumps({"spec": self.spec, "dtype": self.dtype}, indent=2, default=str))
        missing = list(dict.fromkeys(str(p) for p in paths if not self.has(p)))
        bar = progress_bar(total=len(missing), desc=f"frames {self.fingerprint}", unit="frame", enabled=progress)
        try:
            if num_proc > 1 and len(missing) > 1:
                import multiprocessing

                with multiprocessing.get_context().Pool(min(num_proc, len(missing))) as pool:
                    for _ in pool.imap_unordered(self.render, missing):
                        bar.update()
            else:
                for path in missing:
                    self.render(path)
                    bar.update()
        finally:
            bar.close()
        return len(missing)

    def stack(self, paths: Sequence[str | os.PathLike], as_stored: bool = False) -> dict[str, np.ndarray]:
        """The cached features of the frames of one sample, stacked: ``{name: (T, *shape)}``, floating ones as
        float32, or with ``as_stored=True`` in the stored dtype (float16 for a float16 cache: half the bytes to
        move, and the conversion is left to the batch, e.g. `FeatureCollator`'s ``.float()`` in torch). Frames
        whose stored dtype is the returned one are read straight into the stacked array (one copy from the file)."""
        folders = [self.location(path) for path in paths]
        for path, folder in zip(paths, folders):
            if not folder.is_dir():
                raise FacetVLMError("frame is not in the cache yet; call ensure() first", path)
        out: dict[str, np.ndarray] = {}
        for file in sorted(folders[0].glob("*.npy")):
            stacked = None
            for index, folder in enumerate(folders):
                with open(folder / file.name, "rb") as handle:
                    version = np.lib.format.read_magic(handle)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = header(handle)
                    if stacked is None:
                        wanted = np.float32 if dtype == np.float16 and not as_stored else dtype
                        stacked = np.empty((len(folders), *shape), wanted)
                    if tuple(shape) != stacked.shape[1:] or fortran:
                        raise FacetVLMError(f"cached {file.stem} has shape {shape}, expected {stacked.shape[1:]}",
                                            paths[index])
                    if dtype == stacked.dtype:
                        handle.readinto(memoryview(stacked[index]).cast("B"))
                    else:
                        stacked[index] = np.frombuffer(handle.read(), dtype).reshape(shape)
            out[file.stem] = stacked
        return out


class _StackFrames:
    """The lazy `datasets` transform: add each row's stacked frame features (picklable)."""

    def __init__(self, cache: FrameCache, column: str, as_stored: bool = False):
        self.cache = cache
        self.column = column
        self.as_stored = as_stored

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        stacked = [self.cache.stack(paths, self.as_stored) for paths in batch[self.column]]
        out = dict(batch)
        for name in stacked[0] if stacked else ():
            out[name] = [item[name] for item in stacked]
        return out


def prepare_sequence_features(dataset, cache_dir: str | os.PathLike, feature_fn: Any, selection: Any = None, *,
                              spec: dict[str, Any] | None = None, dtype: str = "float32", num_proc: int = 1,
                              selected_column: str = "selected_frames", progress: bool = False,
                              as_stored: bool = False):
    """Select each sequence row's frames, render the frames not cached yet, and return the rows with their
    stacked features.

    Args:
        dataset: sequence rows (``frames`` in temporal order, optional ``onset``/``apex``/``offset`` indices), as
            the sequence loaders return them (`load_bu4dfe`, `load_bp4d`, `load_4dme`).
        cache_dir: root of the per-frame cache (`FrameCache`), shared by every sampling and config.
        feature_fn: per-frame feature function, e.g. ``multiview_features(views, size, channels)``.
        selection: a `facet_vlm.data.sequences.FrameSelection` (default: 8 frames, uniform, repeat).
        spec, dtype: as `FrameCache`.
        num_proc: worker processes for rendering.
        selected_column: name of the added column holding each row's selected frame paths.
        progress: show a progress bar while rendering.
        as_stored: rows carry floating features in the cache's dtype (float16 with ``dtype="float16"``) instead of
            float32 (`FrameCache.stack`); the collator converts the batch.

    Returns:
        ``(dataset, rendered)``: the dataset with `selected_column` added and a transform that adds every feature
        as a (T, ...) float32 (or, `as_stored`, stored-dtype) array on access (``dataset[i]["views"]``:
        (T, V, C, H, W)); `rendered` is the number of frames rendered by this call (0 when everything was cached).

    Raises:
        SequenceError: a selected frame that is missing, empty or cannot be read (the message names the frame),
            or a clip too short under ``short_policy="refuse"``.
    """
    from .sequences import FrameSelection, select_frames

    selection = selection or FrameSelection()
    if "frames" not in dataset.column_names:
        raise ConfigError(f"dataset has no 'frames' column (columns: {dataset.column_names}); use a sequence loader")
    cache = FrameCache(cache_dir, feature_fn, spec, dtype)
    selected = [select_frames(row, selection) for row in dataset]
    rendered = cache.ensure([path for paths in selected for path in paths], num_proc=num_proc, progress=progress)
    if selected_column in dataset.column_names:
        dataset = dataset.remove_columns(selected_column)
    dataset = dataset.add_column(selected_column, selected)
    return dataset.with_transform(_StackFrames(cache, selected_column, as_stored)), rendered


def sequence_features(frames: Sequence[str | os.PathLike], feature_fn: Any, selection: Any = None,
                      onset: int = -1, apex: int = -1, offset: int = -1) -> tuple[list[str], dict[str, np.ndarray]]:
    """Features of one sequence without a cache (the pipeline's path for a single input): select the frames of
    `frames` (already in frame order, e.g. from `facet_vlm.data.sequences.sequence_frames`) by `selection`,
    compute `feature_fn` on each selected frame once, and stack them.

    Returns:
        ``(selected frame paths, {name: (T, *shape) float32 for floating features})``.

    Raises:
        SequenceError: as `prepare_sequence_features`.
    """
    from .sequences import FrameSelection, read_sequence_frame, select_frames

    selection = selection or FrameSelection()
    selected = select_frames({"frames": [str(f) for f in frames], "onset": onset, "apex": apex, "offset": offset},
                             selection)
    computed = {path: feature_fn(read_sequence_frame(path)) for path in dict.fromkeys(selected)}
    names = computed[selected[0]]
    stacked = {}
    for name in names:
        values = np.stack([np.asarray(computed[path][name]) for path in selected])
        stacked[name] = values.astype(np.float32) if np.issubdtype(values.dtype, np.floating) else values
    return selected, stacked
