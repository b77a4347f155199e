"""Predict with a saved model: expressions of raw 3D scans, or emotions, heart rate and pulse of face videos.

    python scripts/predict.py --model outputs/run/model F0001_HA04WH_F3D.wrl bs000_E_HAPPY_0.bnt
    python scripts/predict.py --model outputs/run/model --json scans/*.wrl
    python scripts/predict.py --model outputs/neutral/model --neutral F0001_NE00WH_F3D.wrl F0001_HA04WH_F3D.wrl
    python scripts/predict.py --model outputs/physio/model clip.mp4 --pulse_plot pulse.png
    python scripts/predict.py --model outputs/physio_ref/model --pulse_reference p1_*.mp4 -- p1_trial3.mp4
    python scripts/predict.py --model outputs/4d/model F001/Happy sequence.zip        (4D: folders or .zip files)
    python scripts/predict.py --model outputs/4d/model --sequence F001/Happy/*.wrl    (4D: the frames of one)
    python scripts/predict.py scan.wrl        (no --model: the trained model found locally, see LOCAL_MODEL_DIRS)

The model folder says which it is (`facet_vlm.registry`): the 3D models (FACET-VLM, CoupleFER, AFNet-M) run the
``expression-recognition`` pipeline on scans (any format facet_vlm.io.read_face reads), the physio-prompt model
the ``video-emotion-recognition`` pipeline on face videos (.mp4, .avi, ... or a webcam recording). A folder or a
``.zip`` is a 4D sequence of frame files; the temporal model sees the frames selected as in its training, the
static models the apex frame.
"""

import argparse
import json
import sys
from pathlib import Path

from facet_vlm.cli import EXIT_BAD_DATA, add_debug_argument, run_cli
from facet_vlm.errors import ConfigError, FacetVLMError
from facet_vlm.evaluation import plot_pulse
from facet_vlm.pipelines import default_local_model, load_model, pipeline, resolve_source
from facet_vlm.registry import MODEL_REGISTRY, SCAN_TASK, VIDEO_TASK


def main(argv: list[str] | None = None) -> int:
    """Predict every input; an input that fails is reported (one line on stderr) and the others still are. Returns
    the exit code: 0, or `EXIT_BAD_DATA` when an input failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="A model folder (scripts/train.py's model/) or a Hub id; default: the trained model "
                             "found locally (facet_vlm.registry.LOCAL_MODEL_DIRS, or $FACET_VLM_LOCAL_MODELS), "
                             "a 3D model first.")
    parser.add_argument("paths", nargs="+", help="Scans (3D models) or face videos (the physio-prompt model).")
    parser.add_argument("--top_k", type=int, default=None, help="Print only the K most likely classes.")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="One JSON object per input instead of a table.")
    parser.add_argument("--neutral", default=None,
                        help="The same person's neutral scan, for a model with a neutral reference (AFNet-M, "
                             "CoupleFER or FACET-VLM with neutral_reference; every scan of the call is compared with "
                             "it).")
    parser.add_argument("--sequence", action="store_true",
                        help="The paths are the frame files of one 4D sequence (sorted by frame number).")
    parser.add_argument("--pulse_reference", nargs="+", default=None, metavar="CLIP",
                        help="Videos: several clips of the same person as the inputs (unlabelled, not all of one "
                             "emotion), for a physio model trained with pulse_reference='person_mean': their mean "
                             "pulse map is the person's reference (the inputs themselves may be among them).")
    parser.add_argument("--pulse_plot", type=Path, default=None,
                        help="Videos: save the pulse signal as a PNG here (one video) or into this folder (several).")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    for name in ("top_k", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")

    if args.model is None:
        args.model = str(default_model())
        print(f"using the trained model found locally: {args.model}", file=sys.stderr)
    source = resolve_source(args.model)
    model = load_model(source)
    entry = MODEL_REGISTRY[model.config.model_type]
    runner = pipeline(entry.task, model=model, processor=None, batch_size=args.batch_size)
    if not entry.is_video and args.pulse_reference:
        raise ConfigError("--pulse_reference is for face-video models; this is a 3D model")
    if not entry.is_video:
        failed = predict_scans(runner, args)
    else:
        options = {"top_k": args.top_k}
        if args.pulse_reference:
            options["pulse_reference"] = runner.processor.pulse_reference(args.pulse_reference)
        failed = [path for path in args.paths if not predict_video(runner, path, args, options)]
    if failed:
        print(f"{len(failed)} of {len(args.paths)} inputs failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_BAD_DATA
    return 0


def default_model() -> Path:
    """The local model ``--model`` defaults to: a 3D model (`default_local_model` of the scan task), else a video
    model; the ConfigError names the folders searched for the 3D models."""
    try:
        return default_local_model(SCAN_TASK)
    except ConfigError as scan_error:
        try:
            return default_local_model(VIDEO_TASK)
        except ConfigError:
            raise scan_error from None


def report_failure(path: str, error: FacetVLMError, as_json: bool) -> None:
    """One input's error: a line on stderr (and a JSON object on stdout with ``--json``)."""
    print(f"error: {error}", file=sys.stderr)
    if as_json:
        print(json.dumps({"path": path, "error": str(error)}))


def predict_video(runner, path: str, args: argparse.Namespace, options: dict) -> bool:
    """Predict and print one video (pipeline call arguments `options`); False (after reporting the error) when it
    cannot be read."""
    try:
        result = runner(path, **options)
    except FacetVLMError as error:
        report_failure(path, error, args.json)
        return False
    if args.pulse_plot is not None:
        target = args.pulse_plot / f"{Path(path).stem}_pulse.png" if len(args.paths) > 1 else args.pulse_plot
        target.parent.mkdir(parents=True, exist_ok=True)
        plot_pulse(result["pulse"], result["fps"], result["heart_rate"], target, title=Path(path).name)
        result["pulse_plot"] = str(target)
    print_video(path, result, args.json)
    return True


def predict_scans(runner, args: argparse.Namespace) -> list[str]:
    """Predict and print every scan or, with ``--sequence``, the one sequence the paths make (in batches; a batch
    with a bad scan is redone scan by scan so that the good ones are still reported); returns what failed."""
    inputs = [tuple(args.paths)] if args.sequence else list(args.paths)
    names = [f"{Path(args.paths[0]).parent} ({len(args.paths)} frames)"] if args.sequence else list(args.paths)
    options = {"top_k": args.top_k, **({"neutral": args.neutral} if args.neutral else {})}
    try:
        outcomes = list(zip(names, runner(inputs, **options)))
    except FacetVLMError:
        outcomes = []
        for name, item in zip(names, inputs):
            try:
                outcomes.append((name, runner(item, **options)))
            except FacetVLMError as error:
                outcomes.append((name, error))
    failed = []
    for path, scores in outcomes:
        if isinstance(scores, FacetVLMError):
            report_failure(path, scores, args.json)
            failed.append(path)
        elif args.json:
            print(json.dumps({"path": path, "expression": scores[0]["label"], "scores": scores}))
        else:
            print(f"{path}: {scores[0]['label']}")
            for entry in scores:
                print(f"    {entry['label']:<14} {entry['score']:.3f}")
    return failed


def print_video(path: str, result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"path": path, **result}))
        return
    print(f"{path}: heart rate {result['heart_rate']:.1f} bpm, SNR {result['heart_rate_snr_db']:+.1f} dB "
          f"({len(result['pulse'])} pulse samples at {result['fps']:.1f} fps)")
    over_time = result["heart_rate_over_time"]["heart_rates"]
    if len(over_time) > 1:
        print(f"    over time ({result['heart_rate_over_time']['window_s']:g} s windows): {min(over_time):.0f} to "
              f"{max(over_time):.0f} bpm, median {sorted(over_time)[len(over_time) // 2]:.0f}")
    if result["heart_rate_low_confidence"]:
        print("    LOW CONFIDENCE heart rate: " + "; ".join(result["heart_rate_warnings"]))
    for head in ("valence", "arousal", "emotion"):
        for entry in result[head] or []:
            print(f"    {head:<8} {entry['label']:<14} {entry['score']:.3f}")
    if "pulse_plot" in result:
        print(f"    pulse plot: {result['pulse_plot']}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
