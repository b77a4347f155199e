"""Speed benchmarks: rendering and the feature cache (``render``), model throughput (``train``) and 4D sequence
rendering and cached reads (``sequence``). Each subcommand is a pair ``add_<name>_parser`` / ``run_<name>``; the
measuring functions (`bench_model`, `bench_sequences`) return their numbers for the report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..face import Face
from ..geometry import DEFAULT_VIEWS, align, render_views, sample_points


def build_scan(triangles: int = 15000, texture_size: int = 512, radius: float = 70.0, seed: int = 0) -> Face:
    """A textured face-like height field (mm, facing +z) over a disc, with about `triangles` triangles in the crop."""
    spacing = np.sqrt(2.0 * np.pi * radius**2 / triangles)
    n = int(round(2.0 * radius / spacing)) + 1
    xs = np.linspace(-radius, radius, n)
    x, y = np.meshgrid(xs, xs)
    z = (np.sqrt(np.maximum(120.0**2 - x**2 - y**2, 0.0)) - 120.0
         + 22.0 * np.exp(-(x**2 / (2 * 9.0**2) + (y - 8.0) ** 2 / (2 * 16.0**2)))
         - 6.0 * np.exp(-((np.abs(x) - 32.0) ** 2 + (y - 35.0) ** 2) / (2 * 8.0**2)))
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    vertices = np.stack([x, y, z], -1).reshape(-1, 3)
    faces = faces[np.all(np.hypot(vertices[faces, 0], vertices[faces, 1]) <= radius, axis=1)]
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (texture_size // 16, texture_size // 16, 3)).astype(np.uint8)
    texture = np.kron(coarse, np.ones((16, 16, 1), np.uint8))
    uv = (vertices[:, :2] + radius) / (2.0 * radius)
    return Face(vertices, faces, uv=uv, texture=texture)


def _views(count: int) -> tuple[tuple[float, float], ...]:
    """The first `count` default views, then yaws spread over ±45° when more are asked for."""
    if count <= len(DEFAULT_VIEWS):
        return DEFAULT_VIEWS[:count]
    return DEFAULT_VIEWS + tuple((float(y), 0.0) for y in np.linspace(-45.0, 45.0, count - len(DEFAULT_VIEWS)))


def _best_time(fn, repeats: int) -> float:
    """Median CPU time of `repeats` calls: on a shared machine it measures the work, not the waiting (all the code
    timed here is single-threaded, so CPU time is also the wall time on an idle core)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return float(np.median(times))


def add_render_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("render", help="rendering, point sampling and feature-cache speed")
    parser.add_argument("--scan", type=Path, help="a scan read_face reads (default: a generated 15k-triangle one)")
    parser.add_argument("--views", type=int, default=5, help="number of views per render")
    parser.add_argument("--size", type=int, default=224, help="image size in pixels")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions")
    parser.add_argument("--points", type=int, default=4096, help="points per cloud for sample_points")
    parser.add_argument("--cache-rows", type=int, default=8, help="scans in the cached-read comparison (0: skip)")
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32"), help="cache storage dtype")
    add_threads_argument(parser)
    parser.set_defaults(run=run_render)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-threads", "--num_threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core). On a machine shared with "
                             "other CPU-heavy jobs, 1 avoids the threads waiting on each other")


def set_threads(args: argparse.Namespace) -> int:
    """Apply `--num-threads` (when given) and return torch's thread count."""
    import torch

    if args.num_threads is not None:
        if args.num_threads < 1:
            raise SystemExit(f"--num-threads must be >= 1, got {args.num_threads}")
        torch.set_num_threads(args.num_threads)
    return torch.get_num_threads()


def run_render(args: argparse.Namespace) -> None:
    from ..io import read_face

    threads = set_threads(args)
    face = read_face(args.scan) if args.scan else build_scan()
    views = _views(args.views)
    channels = ("texture", "depth", "normal")
    start = time.perf_counter()
    render_views(align(face), views[:1], 8, channels)
    sample_points(align(face), 16)
    print(f"warm-up (numba compile or cache load): {time.perf_counter() - start:.2f} s; times below are median "
          f"CPU times of one process ({threads} torch threads; the geometry code is single-threaded)")

    align_s = _best_time(lambda: align(face), max(3, args.repeats // 4))
    aligned = align(face)
    print(f"scan: {face}; aligned: {aligned.num_faces} triangles in the crop; align {align_s * 1e3:.1f} ms")
    render_s = _best_time(lambda: render_views(aligned, views, args.size, channels), args.repeats)
    print(f"render_views: {len(views)} views x {args.size}² x {channels}: {render_s * 1e3:.1f} ms "
          f"= {len(views) / render_s:.0f} views/s ({render_s / len(views) * 1e3:.2f} ms/view)")
    raw_s = _best_time(lambda: render_views(align(face), views, args.size, channels), args.repeats)
    print(f"raw scan to views (align + render_views): {raw_s * 1e3:.1f} ms = {len(views) / raw_s:.0f} views/s "
          "end to end")
    points_s = _best_time(lambda: sample_points(aligned, args.points), max(3, args.repeats // 4))
    print(f"sample_points: {args.points} points (FPS from {4 * args.points}): {points_s * 1e3:.1f} ms "
          f"= {args.points / points_s:.0f} points/s")
    if args.cache_rows > 0:
        _cache_ratio(face, views, args.size, channels, args.cache_rows, args.dtype)


def _cache_ratio(face: Face, views, size: int, channels, rows: int, dtype: str) -> None:
    """Time a fresh read_face + align + render of a .wrl scan against a read of its features from the cache."""
    import datasets

    from ..data.cache import multiview_features, prepare_features
    from ..io import read_face, write_wrl

    feature_fn = multiview_features(views, size, channels)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(write_wrl(Path(tmp) / f"scan_{i}.wrl", face)) for i in range(rows)]
        table = datasets.Dataset.from_dict({"path": paths})
        read_s = _best_time(lambda: [read_face(p) for p in paths], 3) / rows
        fresh_s = _best_time(lambda: [feature_fn(read_face(p)) for p in paths], 3) / rows
        datasets.disable_progress_bars()
        start = time.perf_counter()
        prepare_features(table, Path(tmp) / "cache", feature_fn, shard_size=max(1, rows // 2), dtype=dtype)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        cached = prepare_features(table, Path(tmp) / "cache", feature_fn, shard_size=max(1, rows // 2), dtype=dtype)
        reopen_s = time.perf_counter() - start
        numpy_s = _best_time(lambda: [cached[i]["views"] for i in range(rows)], 3) / rows
        batch_s = _best_time(lambda: cached[0:rows]["views"], 3) / rows
        as_torch = cached.with_format("torch")
        torch_s = _best_time(lambda: [as_torch[i]["views"] for i in range(rows)], 3) / rows
    print(f"feature cache ({rows} .wrl scans, {dtype}): build {build_s:.2f} s, reopen {reopen_s * 1e3:.0f} ms")
    print(f"  fresh: read_face {read_s * 1e3:.1f} ms + align+render {(fresh_s - read_s) * 1e3:.1f} ms "
          f"= {fresh_s * 1e3:.1f} ms/scan")
    print(f"  cached read: numpy format {numpy_s * 1e3:.2f} ms/scan ({fresh_s / numpy_s:.0f}x faster), "
          f"torch format {torch_s * 1e3:.2f} ms/scan ({fresh_s / torch_s:.0f}x faster), "
          f"one slice of {rows} rows {batch_s * 1e3:.2f} ms/scan ({fresh_s / batch_s:.0f}x faster)")



# ----------------------------------------------------------------------------------------------------- train
#: Small configs per model (64-px views, 2-layer towers): what the CPU bench and the synthetic runs use.
BENCH_MODELS = {
    "facet_vlm": {"vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                    "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
                  "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                  "num_attention_heads": 2},
                  "channels": ["depth", "normal"], "projection_dim": 64, "cvsa_layers": 1, "cvsa_heads": 4,
                  "mtgf_heads": 4, "temporal_layers": 1, "patch_stem": "conv"},
    "couplefer": {"vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                    "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
                  "point_hidden_size": 64, "point_intermediate_size": 128, "point_num_attention_heads": 4,
                  "num_point_groups": 32, "point_group_size": 16, "projection_dim": 64},
    "afnet_m": {"embedding_size": 16, "hidden_sizes": [16, 32, 64], "depths": [1, 1, 1], "image_size": 64},
    "physio_prompt": {"vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                        "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
                      "num_prompts": 2, "adapter_bottleneck": 16, "pulse_hidden_size": 32},
}


#: ViT-B/16-sized configs: the library defaults (CLIP ViT-B/16 towers at 224², FACET-VLM's 5 views x 3 channel
#: groups, CoupleFER's 128 point patches, the physio model's 8 frames per clip) and AFNet-M's default CNNs at 224².
BASE_MODELS = {"facet_vlm": {}, "couplefer": {}, "afnet_m": {"image_size": 224}, "physio_prompt": {}}
BENCH_SIZES = {"small": BENCH_MODELS, "base": BASE_MODELS}


def bench_inputs(model_type: str, config, batch: int, generator) -> dict:
    """Random inputs of the shapes the model's processor produces (no rendering: the bench times the model)."""
    import torch

    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    if model_type == "facet_vlm":
        from ..models.facet_vlm.configuration_facet_vlm import CHANNEL_GROUP_WIDTHS

        channels = sum(CHANNEL_GROUP_WIDTHS[name] for name in config.channels)
        size = config.vision_config.image_size
        inputs = {"pixel_values": rand(batch, config.num_views, channels, size, size)}
    elif model_type == "couplefer":
        size = config.vision_config.image_size
        inputs = {"pixel_values": rand(batch, 3, size, size), "points": rand(batch, 1024, config.point_input_dim)}
    elif model_type == "afnet_m":
        size = config.image_size
        inputs = {"pixel_values": rand(batch, 3, size, size), "geometry_values": rand(batch, 4, size, size),
                  "region_masks": rand(batch, config.num_regions, size, size)}
    else:
        size = config.vision_config.image_size
        inputs = {"pixel_values": rand(batch, 8, 3, size, size), "tfr_values": rand(batch, 1, 64, 64)}
        inputs["labels"] = torch.randint(0, 2, (batch, 2), generator=generator)
        return inputs
    inputs["labels"] = torch.randint(0, config.num_labels, (batch,), generator=generator)
    return inputs


def matmul_peak_flops(size: int = 2048, repeats: int = 5, device: str = "cpu", dtype=None) -> float:
    """FLOP/s of a large matmul on this machine (best of `repeats`; float32 unless `dtype`): the reference for the
    model's share."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    best = min(_wall(lambda: (a @ b, sync())) for _ in range(repeats))
    return 2.0 * size**3 / best


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(model_type: str, batch_size: int, steps: int, size: str = "small",
                gradient_checkpointing: bool = False, num_threads: int | None = None, device: str = "cpu",
                bf16: bool = False) -> dict:
    """One model's training and inference throughput, forward FLOP/s and its share of the FLOP/s of a large matmul
    measured in the same process just before the forward is timed (on a shared machine both see the same load).

    FLOPs are counted by torch's FlopCounterMode on one forward with eager attention (it does not count the CPU
    SDPA kernel); the timed runs use the default SDPA attention. A training step is forward + backward + AdamW.
    Small models get one untimed warm-up step; base ones (seconds per step) are timed from the first step.
    On ``device="cuda"`` the model, inputs and matmul run on the GPU (timed after a synchronise), the peak memory is
    the GPU's, and ``bf16`` runs every forward under bfloat16 autocast (the matmul reference in bf16 too).
    """
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..registry import model_entry as model_registry

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    entry = model_registry(model_type)
    torch.manual_seed(0)
    config = entry.config_class(**BENCH_SIZES[size][model_type], num_labels=6)
    model = entry.model_class(config).to(device)
    inputs = {name: value.to(device) for name, value in
              bench_inputs(model_type, config, batch_size, torch.Generator().manual_seed(0)).items()}
    dtype = torch.bfloat16 if bf16 else torch.float32

    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    features = {name: value for name, value in inputs.items() if name != "labels"}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    model.eval()
    _fill_caches(model)
    attention = model.config._attn_implementation
    switch = attention not in (None, "eager")
    if switch:
        model.set_attn_implementation("eager")
    # FlopCounterMode's module tracker fails under no_grad; with no parameter requiring grad no graph is kept either.
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        model(**features)
    for parameter in trainable:
        parameter.requires_grad_(True)
    flops = counter.get_total_flops()
    if switch:
        model.set_attn_implementation(attention)
    peak_flops = matmul_peak_flops(device=device, dtype=dtype)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        timed(lambda: model(**features))
        infer_s = min(timed(lambda: model(**features)) for _ in range(steps))

    def train_step() -> None:
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    _fill_caches(model)
    checkpointing = gradient_checkpointing and model.supports_gradient_checkpointing  # AFNet-M: batch norm
    if checkpointing:
        model.activation_checkpointing_enable()
    if size == "small" or device == "cuda":
        timed(train_step)
    train_s = min(timed(train_step) for _ in range(steps))
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"parameters": sum(p.numel() for p in model.parameters()), "attn_implementation": attention,
            "gradient_checkpointing": checkpointing,
            "train_samples_per_s": batch_size / train_s, "inference_samples_per_s": batch_size / infer_s,
            "forward_gflops": flops / 1e9, "forward_gflops_per_s": flops / infer_s / 1e9,
            "matmul_peak_gflops": peak_flops / 1e9, "share_of_matmul_peak": flops / infer_s / peak_flops,
            "peak_rss_mb": peak_mb, "device": device, "bf16": bf16}


def _fill_caches(model) -> None:
    """FACET-VLM encodes its class prompts once and caches them (again after `train()`/`eval()`): fill the cache so
    that it is neither timed nor counted."""
    import torch

    encoder = getattr(model.base_model, "get_text_embeds", None)
    if encoder is not None:
        with torch.no_grad():
            encoder()


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="training/inference samples/s, peak memory and matmul share")
    parser.add_argument("--models", nargs="+", default=list(BENCH_MODELS), choices=list(BENCH_MODELS))
    parser.add_argument("--size", default="small", choices=list(BENCH_SIZES),
                        help="small: the CPU test configs (64² views, 2-layer towers); base: ViT-B/16 towers at 224²")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 (small), 8 (base)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default 5 (small), 1 (base)")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="recompute layer activations in the backward pass; default on for base (a FACET-VLM "
                             "batch of 8 runs 120 ViT-B/16 images), off for small")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: run on the GPU (skipped with a message where none is present)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the model and the matmul")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    add_threads_argument(parser)
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> None:
    """Per model: optimizer steps/s and forward samples/s on random inputs, peak RSS, and the forward's FLOP/s as a
    share of the machine's float32 matmul FLOP/s (FLOPs counted by torch's FlopCounterMode). Every model runs in a
    fresh process, so its peak RSS is its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench train --device cuda: no CUDA GPU on this machine (torch.cuda.is_available() is False); skipped")
        return
    threads = set_threads(args)
    base = args.size == "base"
    batch_size = args.batch_size or (8 if base else 16)
    steps = args.steps or (1 if base else 5)
    checkpointing = base if args.gradient_checkpointing is None else args.gradient_checkpointing
    print(f"{threads} threads; size {args.size}, batch {batch_size}, gradient checkpointing "
          f"{'on' if checkpointing else 'off'}")
    print(f"{'model':<14} {'params':>9} {'train/s':>9} {'infer/s':>9} {'GFLOP/fwd':>10} {'fwd GFLOP/s':>12} "
          f"{'matmul':>8} {'of it':>6} {'peak RSS':>9}")
    results = {"num_threads": threads, "size": args.size, "device": args.device, "bf16": args.bf16,
               "batch_size": batch_size, "gradient_checkpointing": checkpointing, "models": {}}
    spawn = multiprocessing.get_context("spawn")
    for model_type in args.models:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            row = pool.submit(bench_model, model_type, batch_size, steps, args.size, checkpointing,
                              torch.get_num_threads(), args.device, args.bf16).result()
        results["models"][model_type] = row
        print(f"{model_type:<14} {row['parameters'] / 1e6:8.2f}M {row['train_samples_per_s']:9.2f} "
              f"{row['inference_samples_per_s']:9.2f} {row['forward_gflops']:10.2f} "
              f"{row['forward_gflops_per_s']:12.1f} {row['matmul_peak_gflops']:8.1f} "
              f"{100 * row['share_of_matmul_peak']:5.1f}% "
              f"{row['peak_rss_mb']:8.0f}M{'' if row['gradient_checkpointing'] == checkpointing else ' (no ckpt)'}")
    print("train/s: forward + backward + AdamW step; infer/s: forward without gradients; matmul: GFLOP/s of a "
          "2048² matmul (float32, bf16 with --bf16) measured just before the forward; peak RSS: the high-water mark "
          "of the model's own process (on cuda: the GPU's peak allocated memory); (no ckpt): the model does not "
          "support gradient checkpointing.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))




# ----------------------------------------------------------------------------------------------------- sequence
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
    """Render and cache-read timings of one generated sequence (``bench.py sequence``): read + align + render per
    frame, filling the per-frame cache (`FrameCache.ensure`) and reading the stacked (T, V, C, H, W) sequence back
    (`FrameCache.stack`; with float16 storage also the read followed by the float32 conversion the collator does),
    each the median of `repeats` runs; seconds and rates."""
    import torch

    from ..data import generate_sequences, load_bp4d
    from ..data.cache import multiview_features
    from ..data.sequence_cache import FrameCache
    from ..io import read_face

    feature = multiview_features(list(DEFAULT_VIEWS)[:views], size=size, channels=channels)
    with tempfile.TemporaryDirectory() as tmp:
        generate_sequences(Path(tmp) / "data", subjects=1, formats=("bp4d",), frames=frames, vertices=vertices,
                           texture_size=texture_size)
        paths = load_bp4d(Path(tmp) / "data")[0]["frames"]
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


def add_sequence_parser(subparsers: argparse._SubParsersAction) -> None:
    """``bench.py sequence``: frames rendered per second and a cached sequence read vs rendering it (one generated
    BP4D-layout sequence; medians of ``--repeats`` runs)."""
    parser = subparsers.add_parser("sequence", help="4D: per-frame render speed, cached sequence read vs render")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--vertices", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="cache storage dtype (float16: the read returns float16, as the training rows carry it)")
    parser.set_defaults(run=run_sequence)


def run_sequence(args: argparse.Namespace) -> None:
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




#: What `bench_imports` times, each in a fresh interpreter: the library alone, what a user's first model load adds
#: (transformers' Auto classes, torch, the registration), and torch + transformers' Auto module alone for comparison.
IMPORT_CASES = {
    "import facet_vlm": "import facet_vlm",
    "import facet_vlm; transformers.AutoConfig": "import facet_vlm, transformers; transformers.AutoConfig",
    "torch + transformers.AutoConfig (no facet_vlm)": "import transformers; transformers.AutoConfig",
}


def bench_imports(repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median and minimum wall time (s) of each of `IMPORT_CASES` over `repeats` fresh interpreters (``python -c``,
    `HF_HUB_OFFLINE` set), measured inside the interpreter around the statement (the interpreter's own start-up is
    not counted)."""
    import os
    import subprocess
    import sys

    results = {}
    for name, statement in IMPORT_CASES.items():
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        times = []
        for _ in range(repeats):
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            times.append(float(done.stdout.strip().splitlines()[-1]))
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}
    return results


def add_import_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import", help="time `import facet_vlm` (and a first Auto class use) in fresh "
                                                  "interpreters")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.set_defaults(run=run_import)


def run_import(args: argparse.Namespace) -> None:
    results = bench_imports(args.repeats)
    for name, row in results.items():
        print(f"{name:50s} median {row['median_s']:.3f} s  min {row['min_s']:.3f} s  ({row['repeats']} runs)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
