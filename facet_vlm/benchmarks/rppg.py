"""Heart rate from face video against a contact-PPG reference, and the streaming cost of a long clip.

``python scripts/bench.py rppg ROOT [--subjects 3 4 5 ...] [--json]`` runs :func:`facet_vlm.physio.measure_pulse`
on every ``subject<N>/vid.*`` of a UBFC-rPPG root and compares it with the reference heart rate computed from
``ground_truth.txt`` as rPPG-Toolbox does (:func:`facet_vlm.data.ubfc.reference_heart_rate`): per subject the
estimate, the reference, the SNR and the low-confidence flag; over subjects MAE, RMSE, MAPE and Pearson's r
(rPPG-Toolbox's definitions, ``unsupervised_methods/unsupervised_predictor.py``).

``python scripts/bench.py rppg-stream [--minutes 10]`` writes a generated clip (a real face photograph with a
known pulse, :mod:`facet_vlm.data.photo_pulse_video`) to a temporary folder and measures, each in a fresh process,
decoding alone and the whole pulse measurement: seconds, frames per second and peak resident memory.

As a library call: ``benchmark_rppg(root, subjects)`` returns the per-subject records and the metrics;
``stream_benchmark(minutes)`` the timings and memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

#: The published reference this benchmark is read beside: rPPG-Toolbox's unsupervised POS on UBFC-rPPG, evaluated
#: per video with the FFT heart rate (the figure quoted in the issue that asked for this benchmark).
PUBLISHED_POS_UBFC = {"source": "rPPG-Toolbox, unsupervised POS, UBFC-rPPG (all subjects, per-video FFT)",
                      "MAE": 4.08}


def heart_rate_metrics(estimates: list[float] | np.ndarray, references: list[float] | np.ndarray
                       ) -> dict[str, float]:
    """MAE and RMSE (bpm), MAPE (%) and Pearson's r of estimated against reference heart rates (r is NaN for fewer
    than two subjects or a constant column)."""
    estimates, references = np.asarray(estimates, float), np.asarray(references, float)
    errors = estimates - references
    pearson = float("nan")
    if len(errors) > 1 and estimates.std() > 0 and references.std() > 0:
        pearson = float(np.corrcoef(estimates, references)[0, 1])
    return {"subjects": int(len(errors)), "MAE": float(np.mean(np.abs(errors))),
            "RMSE": float(np.sqrt(np.mean(errors**2))), "MAPE": float(np.mean(np.abs(errors / references)) * 100),
            "Pearson": pearson}


@dataclass
class RPPGBenchmark:
    """What :func:`benchmark_rppg` returns: one record per subject, the metrics (all subjects, and those not
    flagged low-confidence) and the settings that made them."""

    records: list[dict[str, Any]]
    metrics: dict[str, float]
    confident_metrics: dict[str, float] | None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "metrics": self.metrics, "confident_metrics": self.confident_metrics,
                "published": PUBLISHED_POS_UBFC, "subjects": self.records}


def benchmark_rppg(root: str | PathLike, subjects: list[int] | None = None, config: Any = None,
                   fps: float | None = None, progress: Any = None) -> RPPGBenchmark:
    """Measure every subject of a UBFC-rPPG root and compare with its reference (module docstring).

    Args:
        root: the folder holding ``subject<N>`` folders.
        subjects: the subject numbers (default: all found).
        config: a :class:`facet_vlm.physio.PulseConfig` (default settings if omitted).
        fps: frame rate to use instead of the container's (rPPG-Toolbox's configuration uses 30).
        progress: called with each record as it is finished (e.g. to print it).
    """
    import torch

    from ..data.ubfc import list_ubfc_subjects, read_ubfc_ground_truth, reference_heart_rate
    from ..physio import PulseConfig, measure_pulse

    config = config or PulseConfig()
    records = []
    for subject in list_ubfc_subjects(root, subjects):
        start = time.perf_counter()
        result = measure_pulse(subject.video_path, fps, config)
        seconds = time.perf_counter() - start
        truth = read_ubfc_ground_truth(subject.ground_truth_path)
        reference = reference_heart_rate(truth.ppg, result.frames, result.fps, config.band, config.filter_order,
                                         config.detrend_lambda)
        record = {"subject": subject.subject, "heart_rate": round(result.heart_rate, 2), "fps": result.fps,
                  "frames": result.frames, "reference_heart_rate": round(reference, 2),
                  "error": round(result.heart_rate - reference, 2), "snr_db": round(result.snr_db, 2),
                  "snr_threshold_db": round(result.snr_threshold_db, 2), "low_confidence": result.low_confidence,
                  "reasons": result.reasons, "face": result.face.to_dict(), "seconds": round(seconds, 1),
                  "video": subject.video_path.name}
        records.append(record)
        if progress is not None:
            progress(record)
    metrics = heart_rate_metrics([r["heart_rate"] for r in records], [r["reference_heart_rate"] for r in records])
    confident = [r for r in records if not r["low_confidence"]]
    confident_metrics = (heart_rate_metrics([r["heart_rate"] for r in confident],
                                            [r["reference_heart_rate"] for r in confident]) if confident else None)
    settings = {**{key: value for key, value in asdict(config).items() if key != "regions"},
                "regions": asdict(config.regions), "fps_override": fps, "torch_threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "root": str(root)}
    return RPPGBenchmark(records, metrics, confident_metrics, settings)


def _print_table(benchmark: RPPGBenchmark) -> None:
    print(f"{'subject':>7} {'estimate':>8} {'reference':>9} {'error':>7} {'SNR dB':>7} {'threshold':>9} "
          f"{'frames':>6} {'fps':>6} {'face %':>6} {'s':>5}  flag")
    for r in benchmark.records:
        print(f"{r['subject']:>7} {r['heart_rate']:>8.1f} {r['reference_heart_rate']:>9.1f} {r['error']:>+7.1f} "
              f"{r['snr_db']:>+7.1f} {r['snr_threshold_db']:>+9.1f} {r['frames']:>6} {r['fps']:>6.2f} "
              f"{100 * r['face']['face_fraction']:>6.0f} {r['seconds']:>5.1f}  "
              f"{'LOW CONFIDENCE' if r['low_confidence'] else ''}")
    for name, metrics in (("all", benchmark.metrics), ("not flagged", benchmark.confident_metrics)):
        if metrics:
            print(f"{name} ({metrics['subjects']} subjects): MAE {metrics['MAE']:.2f} bpm, RMSE {metrics['RMSE']:.2f} "
                  f"bpm, MAPE {metrics['MAPE']:.2f} %, Pearson r {metrics['Pearson']:.3f}")
    print(f"published: {PUBLISHED_POS_UBFC['source']}: MAE {PUBLISHED_POS_UBFC['MAE']} bpm")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rppg`` and ``rppg-stream`` on ``scripts/bench.py``'s subcommands."""
    parser = subparsers.add_parser("rppg", help="heart rate from face video against UBFC-rPPG's contact PPG")
    parser.add_argument("root", type=Path, help="a folder in the UBFC-rPPG layout (subject<N>/vid.avi|vid.mp4 and "
                                                "ground_truth.txt)")
    parser.add_argument("--subjects", type=int, nargs="+", default=None, help="subject numbers (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--method", choices=("pos", "chrom"), default="chrom", help="rPPG method (PulseConfig)")
    parser.add_argument("--detect-every-s", type=float, default=0.0,
                        help="seconds between face detections; 0 (default): every frame, 0.2: about 5x faster")
    parser.add_argument("--detector", choices=("auto", "mtcnn", "skin"), default="auto")
    parser.add_argument("--fps", type=float, default=None, help="frame rate instead of the container's")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads for the face detector")
    parser.set_defaults(run=run)
    stream = subparsers.add_parser("rppg-stream", help="decode speed and peak memory of the pulse measurement on "
                                                       "a generated long clip")
    stream.add_argument("--minutes", type=float, default=10.0)
    stream.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("WIDTH", "HEIGHT"))
    stream.add_argument("--fps", type=float, default=30.0)
    stream.add_argument("--codec", default="MJPG", help="FourCC of the written clip (MJPG keeps it to about 1 GB)")
    stream.add_argument("--folder", type=Path, default=None, help="where to write the clip (default: a temporary "
                                                                  "folder, removed afterwards)")
    stream.add_argument("--json", action="store_true")
    stream.set_defaults(run=run_stream)


def run(args: argparse.Namespace) -> RPPGBenchmark:
    """``bench.py rppg``: the table (or JSON) of :func:`benchmark_rppg`."""
    import torch

    from ..physio import PulseConfig

    torch.set_num_threads(max(1, args.num_threads))
    config = PulseConfig(method=args.method, detector=args.detector, detect_every_s=args.detect_every_s)
    progress = None if args.json else (lambda r: print(f"subject {r['subject']}: {r['heart_rate']:.1f} bpm "
                                                       f"(reference {r['reference_heart_rate']:.1f})", flush=True))
    benchmark = benchmark_rppg(args.root, args.subjects, config, args.fps, progress)
    if args.json:
        print(json.dumps(benchmark.to_dict(), indent=2))
    else:
        _print_table(benchmark)
    if args.output is not None:
        args.output.write_text(json.dumps(benchmark.to_dict(), indent=2) + "\n")
    return benchmark


def _peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    """Resident memory of this process now (MiB; Linux ``/proc/self/status``), NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _decode_only(path: str) -> dict[str, float]:
    from ..physio.video import VideoStream

    baseline = _current_rss_mib()
    start = time.perf_counter()
    frames = sum(1 for _ in VideoStream(path))
    seconds = time.perf_counter() - start
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "rss_before_mib": baseline,
            "peak_rss_mib": _peak_rss_mib()}


def _measure(path: str) -> dict[str, Any]:
    import torch

    from ..physio import measure_pulse

    torch.set_num_threads(1)
    baseline = _current_rss_mib()
    start = time.perf_counter()
    result = measure_pulse(path)
    seconds = time.perf_counter() - start
    return {"frames": result.frames, "seconds": seconds, "fps": result.frames / seconds,
            "rss_before_mib": baseline, "peak_rss_mib": _peak_rss_mib(), "heart_rate": result.heart_rate,
            "snr_db": result.snr_db,
            "low_confidence": result.low_confidence, "face": result.face.to_dict()}


def stream_benchmark(minutes: float = 10.0, size: tuple[int, int] = (640, 480), fps: float = 30.0,
                     codec: str = "MJPG", folder: str | PathLike | None = None, heart_rate: float = 72.0
                     ) -> dict[str, Any]:
    """Write a ``minutes``-long generated clip and measure decoding alone and :func:`measure_pulse`, each in a fresh
    process (so each peak RSS is its own). Returns the clip's settings and both measurements."""
    import multiprocessing

    from skimage.data import astronaut

    from ..data.photo_pulse_video import PhotoPulseSettings, write_photo_pulse_video

    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        path = Path(scratch) / "long_clip.avi"
        start = time.perf_counter()
        settings = PhotoPulseSettings(fps=fps, heart_rate=heart_rate, size=tuple(size))
        used = write_photo_pulse_video(path, astronaut(), minutes * 60, settings, codecs=(codec,))
        written = time.perf_counter() - start
        clip = {"minutes": minutes, "size": list(size), "fps": fps, "codec": used, "heart_rate": heart_rate,
                "bytes": path.stat().st_size, "write_seconds": written,
                "decoded_bytes_if_held": int(minutes * 60 * fps) * size[0] * size[1] * 3}
        context = multiprocessing.get_context("spawn")
        with context.Pool(1, maxtasksperchild=1) as pool:
            decode = pool.apply(_decode_only, (str(path),))
        with context.Pool(1, maxtasksperchild=1) as pool:
            measure = pool.apply(_measure, (str(path),))
    return {"clip": clip, "decode": decode, "measure_pulse": measure,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset")}


def run_stream(args: argparse.Namespace) -> dict[str, Any]:
    """``bench.py rppg-stream``: print :func:`stream_benchmark`."""
    results = stream_benchmark(args.minutes, tuple(args.size), args.fps, args.codec, args.folder)
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    clip, decode, measure = results["clip"], results["decode"], results["measure_pulse"]
    print(f"clip: {clip['minutes']:g} min {clip['size'][0]}x{clip['size'][1]} at {clip['fps']:g} fps, {clip['codec']}, "
          f"{clip['bytes'] / 2**20:.0f} MiB on disk, {clip['decoded_bytes_if_held'] / 2**30:.1f} GiB if decoded whole")
    print(f"decode only:   {decode['frames']} frames in {decode['seconds']:.1f} s ({decode['fps']:.0f} frames/s), "
          f"RSS {decode['rss_before_mib']:.0f} MiB after imports, peak {decode['peak_rss_mib']:.0f} MiB")
    print(f"measure_pulse: {measure['frames']} frames in {measure['seconds']:.1f} s ({measure['fps']:.0f} frames/s), "
          f"RSS {measure['rss_before_mib']:.0f} MiB after imports, peak {measure['peak_rss_mib']:.0f} MiB; "
          f"{measure['heart_rate']:.1f} bpm (truth {clip['heart_rate']:g}), SNR {measure['snr_db']:+.1f} dB")
    return results
