"""Sequence speed: frames rendered per second, and a cached sequence read vs rendering it.

``python scripts/bench_sequences.py [--frames 8] [--views 5] [--size 224] [--vertices 6000] [--repeats 5]``

Generates one synthetic BP4D-layout subject (`generate_sequences`), takes the T1 sequence, and measures
(1) read_face + align + render_views per frame (frames/s and views/s), (2) filling the per-frame cache
(`FrameCache.ensure`: the same work plus writing), and (3) reading the whole sequence back stacked as
(T, V, C, H, W) from the cache (`FrameCache.stack`), each as the median of `repeats` runs. With ``--dtype float16``
the cache stores float16 and the read returns the stored float16 (``as_stored``: what the training rows carry; the
collator converts the batch); the read followed by that conversion to a float32 tensor is timed too.
`bench_sequences` returns the numbers for `scripts/bench.py`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from facet_vlm.data import generate_sequences, load_bp4d
from facet_vlm.data.cache import multiview_features
from facet_vlm.data.sequence_cache import FrameCache
from facet_vlm.io import read_face


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_sequences(frames: int = 8, views: int = 5, size: int = 224,
                    channels: tuple[str, ...] = ("texture", "depth", "normal"), vertices: int = 6000,
                    texture_size: int = 512, repeats: int = 5, dtype: str = "float32") -> dict[str, float]:
    """Render and cache-read timings of one generated sequence (see the module docstring); seconds and rates."""
    from facet_vlm.geometry.render import DEFAULT_VIEWS

    feature = multiview_features(list(DEFAULT_VIEWS)[:views], size=size, channels=channels)
    with tempfile.TemporaryDirectory() as tmp:
        generate_sequences(Path(tmp) / "data", subjects=1, formats=("bp4d",), frames=frames, vertices=vertices,
                           texture_size=texture_size)
        paths = load_bp4d(Path(tmp) / "data", au_folder=None)[0]["frames"]
        render = _median_seconds(lambda: [feature(read_face(path)) for path in paths], repeats)
        cache_dirs = iter(range(repeats))
        fill = _median_seconds(lambda: FrameCache(Path(tmp) / f"cache{next(cache_dirs)}", feature,
                                                  dtype=dtype).ensure(paths), repeats)
        cache = FrameCache(Path(tmp) / "cache0", feature, dtype=dtype)
        as_stored = dtype == "float16"
        read = _median_seconds(lambda: cache.stack(paths, as_stored), repeats)
        read_float32 = _median_seconds(lambda: torch.from_numpy(cache.stack(paths, as_stored)["views"]).float(),
                                       repeats)
        shape = cache.stack(paths)["views"].shape
    return {"frames": frames, "views": views, "size": size, "shape": shape,
            "render_s": render, "frames_per_s": frames / render, "views_per_s": frames * views / render,
            "cache_fill_s": fill, "cached_read_s": read, "read_speedup": render / read,
            "cached_read_float32_s": read_float32, "read_float32_speedup": render / read_float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the sequence bench (also ``scripts/bench.py sequence``)."""
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--vertices", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))


def run(args: argparse.Namespace) -> None:
    """Measure and print the sequence figures."""
    result = bench_sequences(args.frames, args.views, args.size, vertices=args.vertices, repeats=args.repeats,
                             dtype=args.dtype)
    print(f"sequence of {result['frames']} frames -> {result['shape']} ({args.dtype} cache)")
    print(f"  render (read + align + views): {result['render_s'] * 1000:.0f} ms = {result['frames_per_s']:.1f} "
          f"frames/s, {result['views_per_s']:.0f} views/s")
    print(f"  fill the per-frame cache: {result['cache_fill_s'] * 1000:.0f} ms")
    print(f"  cached read (stacked, as stored): {result['cached_read_s'] * 1000:.1f} ms = "
          f"{result['read_speedup']:.1f}x faster than rendering")
    print(f"  cached read + float32 tensor: {result['cached_read_float32_s'] * 1000:.1f} ms = "
          f"{result['read_float32_speedup']:.1f}x faster than rendering")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
