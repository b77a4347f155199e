"""Gradio Space: recognise the facial expression of a 3D face scan with FACET-VLM, CoupleFER or AFNet-M, and the
emotion, heart rate and pulse of a face video with the physio-facial prompt model.

Upload a scan (BU-3DFE ``.wrl`` with its texture and landmarks, Bosphorus ``.bnt``, ``.obj``/``.ply``/``.glb``, or a
``.zip`` holding one of these with its companion files) or pick a bundled example face. The app shows the rendered
views the model sees, an interactive 3D view of the scan and the expression probabilities.

The 4D tab takes a ``.zip`` of one expression sequence (numbered frame files in one folder, e.g. BU-4DFE's
``000.wrl, 001.wrl, ...`` with their textures): it shows a strip of the frames the model sees, the probability of
each class per frame (each frame classified alone) and the sequence's prediction.

The video tab takes a face clip (.mp4/.avi upload or a webcam recording) and shows valence and arousal, the heart
rate and the rPPG pulse signal.

Models come from environment variables holding a local folder or a Hub id, one per entry of `facet_vlm.registry`:
``FACET_VLM_MODEL``, ``COUPLEFER_MODEL``, ``AFNET_M_MODEL`` and ``PHYSIO_PROMPT_MODEL``. A model whose variable is not
set is the trained model found on this machine, if any: the first folder of `facet_vlm.registry.LOCAL_MODEL_DIRS`
(``outputs/pretrain_<name>/model``, ``outputs/<name>_calibrated_small/model``,
``outputs/<name>_synthetic_small/model``, relative to the current directory; ``FACET_VLM_LOCAL_MODELS`` replaces the
list) that holds a saved model of that kind. The page names the folder or Hub
id of every model it serves and what its weights started from (`facet_vlm.starting_weights`: random, a CLIP, or a
saved model, and whether the text tower was trained; a FACET-VLM whose text tower did not start from CLIP is said to
use learned class anchors, not language, as prompts). When there is no 3D model (or no video model) at all, the app
runs offline with a tiny, randomly initialised FACET-VLM (or physio model) and says so: the UI and the API work, the
predictions are meaningless. The example faces are generated at start-up by `facet_vlm.data.synthetic`, so the
Space ships no binary scans. Nothing here contacts the internet unless a Hub id is configured.

API: ``/predict`` takes one file (a scan, a .zip of a scan with its companions, or a .zip of a 4D sequence: one with
several numbered scans) and returns label -> probability; ``/analyze_sequence`` is the 4D tab's call;
``/analyze`` is what the UI calls (several files or an example name, and the model name); ``/analyze_video`` takes a
video, the model name and optionally other clips of the same person (their mean pulse map is the reference a model
with ``pulse_reference="person_mean"`` needs) and returns valence, arousal, the heart-rate text and the pulse plot.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from facet_vlm.errors import ConfigError, FacetVLMError
from facet_vlm.face import Face
from facet_vlm.pipelines import ExpressionRecognitionPipeline, VideoEmotionRecognitionPipeline, pipeline
from facet_vlm.registry import LOCAL_MODEL_DIRS, MODEL_REGISTRY, find_local_model
from facet_vlm.starting_weights import describe_record, prompts_are_language, starting_weights_of

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

#: UI name of each 3D model and the environment variable naming its folder or Hub id (from the registry).
MODEL_ENV = {entry.title: f"{entry.name.upper()}_MODEL" for entry in MODEL_REGISTRY.values() if not entry.is_video}
#: The same for the face-video models.
VIDEO_MODEL_ENV = {entry.title: f"{entry.name.upper()}_MODEL" for entry in MODEL_REGISTRY.values() if entry.is_video}
#: Face-video containers the video tab accepts (anything OpenCV decodes; these are the common ones).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
#: Files that are a scan by themselves (a .zip holds a scan and its companion files).
SCAN_SUFFIXES = (".wrl", ".vrml", ".bnt", ".obj", ".ply", ".glb", ".zip")
#: Files that accompany a scan: textures, landmarks, OBJ materials.
COMPANION_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".bnd", ".lm2", ".lm3", ".mtl")
#: Largest accepted upload, all files together (also enforced by the server through ``max_file_size``).
MAX_UPLOAD_MB = float(os.environ.get("MAX_UPLOAD_MB", "50"))
#: Largest total size of the files inside an uploaded .zip (zip bombs are refused before extraction).
MAX_UNZIPPED_MB = 4 * MAX_UPLOAD_MB
#: Per-request folders (staged uploads, exported .glb files) older than this are deleted.
WORK_MAX_AGE_S = 3600
#: Rendered view size shown in the gallery.
PREVIEW_SIZE = 192
OFFLINE_NOTE = ("**Offline demo:** no model is configured (set `FACET_VLM_MODEL`, `COUPLEFER_MODEL` or "
                "`AFNET_M_MODEL` to a folder or Hub id) and no trained model was found locally (in "
                f"{', '.join(f'`{folder}`' for folder in LOCAL_MODEL_DIRS)}; see the README to train one), so this "
                "runs a tiny, **randomly initialised** FACET-VLM. The interface works; the predicted probabilities "
                "are meaningless.")
VIDEO_OFFLINE_NOTE = ("**Offline video model:** `PHYSIO_PROMPT_MODEL` is not set and no trained physio-prompt model "
                      "was found locally, so this tab runs a tiny, **randomly initialised** physio-prompt model. The "
                      "heart rate and the pulse are measured from the video (rPPG) and are real; the valence and "
                      "arousal scores are meaningless.")
#: System fonts only: the page loads nothing from the internet.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

WORK_DIR = Path(tempfile.mkdtemp(prefix="facet_vlm_space_"))


# ---------------------------------------------------------------------------------------------------------------
# Models and examples
# ---------------------------------------------------------------------------------------------------------------


def tiny_random_pipeline(seed: int = 0) -> ExpressionRecognitionPipeline:
    """A small randomly initialised FACET-VLM (64 px views) for the offline demo."""
    import torch

    from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition

    torch.manual_seed(seed)
    tower = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
    config = FacetVLMConfig(vision_config={**tower, "image_size": 64, "patch_size": 16}, text_config=tower,
                            projection_dim=64, cvsa_heads=2, mtgf_heads=2, cvsa_layers=1, temporal_layers=1)
    return pipeline("expression-recognition", model=FacetVLMForExpressionRecognition(config))


def model_sources(variables: dict[str, str], environ: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """UI name -> (folder or Hub id, how it was chosen) of every model to serve: its environment variable, else the
    trained model of that kind found locally (`facet_vlm.registry.find_local_model`); models with neither are left
    out."""
    environ = os.environ if environ is None else environ
    names = {entry.title: entry.name for entry in MODEL_REGISTRY.values()}
    sources = {}
    for title, variable in variables.items():
        if environ.get(variable):
            sources[title] = (environ[variable], f"set by `{variable}`")
        elif (found := find_local_model(names[title], environ)) is not None:
            sources[title] = (str(found), f"trained model found locally (`{variable}` is not set)")
    return sources


def load_pipelines(task: str, variables: dict[str, str], environ: dict[str, str] | None = None
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    """The pipelines of `model_sources` by UI name and, by UI name, a line saying which model each one runs."""
    models, notes = {}, {}
    for title, (source, reason) in model_sources(variables, environ).items():
        try:
            models[title] = pipeline(task, model=source)
        except (FacetVLMError, OSError, ValueError) as error:
            raise ConfigError(f"{title} model {source} ({reason.replace('`', '')}): cannot load it ({error}); use "
                              "a folder written by save_pretrained or a Hub id, or unset it for the offline "
                              "demo") from error
        notes[title] = f"**{title}**: `{source}` ({reason}; {starting_weights_note(models[title].model)})"
    return models, notes


def starting_weights_note(model: Any) -> str:
    """What a served model's weights started from, in words (its config's ``starting_weights`` record)."""
    record = starting_weights_of(model.config)
    note = f"started from: {describe_record(record)}"
    has_text = "text_tower" in record and not str(record["text_tower"]).startswith("none")
    if getattr(model.config, "model_type", None) == "facet_vlm" and has_text and not prompts_are_language(record):
        note += "; its prompts are learned class anchors, not language (no CLIP text weights)"
    return note


def load_models(environ: dict[str, str] | None = None
                ) -> tuple[dict[str, ExpressionRecognitionPipeline], dict[str, str], bool]:
    """The 3D models by UI name, a line per model saying which folder it runs, and whether the app fell back to the
    random offline model (no model configured and none found locally)."""
    models, notes = load_pipelines("expression-recognition", MODEL_ENV, environ)
    if models:
        return models, notes, False
    return {"FACET-VLM (random, offline demo)": tiny_random_pipeline()}, {}, True


def tiny_random_video_pipeline(seed: int = 0) -> VideoEmotionRecognitionPipeline:
    """A small randomly initialised physio-prompt model (64 px crops, 8 frames) for the offline demo."""
    import torch

    from couple import PhysioPromptConfig, PhysioPromptForEmotionRecognition, PhysioPromptProcessor

    torch.manual_seed(seed)
    tower = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
    config = PhysioPromptConfig(vision_config={**tower, "image_size": 64, "patch_size": 16}, num_prompts=2,
                                adapter_bottleneck=16, pulse_hidden_size=32)
    return pipeline("video-emotion-recognition", model=PhysioPromptForEmotionRecognition(config),
                    processor=PhysioPromptProcessor.from_config(config))


def load_video_models(environ: dict[str, str] | None = None
                      ) -> tuple[dict[str, VideoEmotionRecognitionPipeline], dict[str, str], bool]:
    """`load_models` for the face-video models."""
    models, notes = load_pipelines("video-emotion-recognition", VIDEO_MODEL_ENV, environ)
    if models:
        return models, notes, False
    return {"Physio prompt (random, offline demo)": tiny_random_video_pipeline()}, {}, True


def make_examples(out_dir: Path) -> dict[str, Path]:
    """Generate one synthetic subject (every expression at full intensity, and neutral) in BU-3DFE layout; return
    its scans by display name, e.g. "F0001 happiness"."""
    from facet_vlm.data.synthetic import generate
    from facet_vlm.labels import BU3DFE_CODES

    summary = generate(out_dir, subjects=1, seed=0, intensities=1, progress=False)
    examples = {}
    for scan in sorted(Path(summary.roots["bu3dfe"]).rglob("*_F3D.wrl")):
        code = scan.stem.split("_")[1][:2]
        examples[f"{scan.parent.name} {BU3DFE_CODES.get(code, code)}"] = scan
    return examples


# ---------------------------------------------------------------------------------------------------------------
# Upload handling
# ---------------------------------------------------------------------------------------------------------------


def _supported_list() -> str:
    return ", ".join(SCAN_SUFFIXES)


def _check_sizes(paths: list[Path]) -> None:
    total = sum(path.stat().st_size for path in paths)
    if total > MAX_UPLOAD_MB * 2**20:
        raise gr.Error(f"Upload too large: {total / 2**20:.1f} MB (limit {MAX_UPLOAD_MB:.0f} MB).")


def _extract_zip(archive: Path, out_dir: Path) -> None:
    """Extract a .zip safely: no absolute or parent paths, bounded total size."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [member for member in bundle.infolist() if not member.is_dir()]
            if sum(member.file_size for member in members) > MAX_UNZIPPED_MB * 2**20:
                raise gr.Error(f"{archive.name}: unpacked size exceeds {MAX_UNZIPPED_MB:.0f} MB.")
            for member in members:
                name = Path(member.filename).name
                if not name or name.startswith("."):
                    continue
                with bundle.open(member) as source, open(out_dir / name, "wb") as target:
                    shutil.copyfileobj(source, target)
    except zipfile.BadZipFile:
        raise gr.Error(f"{archive.name}: not a valid .zip archive.") from None


def prune_work_dir(max_age_s: float = WORK_MAX_AGE_S) -> None:
    """Delete per-request folders older than `max_age_s` so that a long-running Space does not fill its disk."""
    cutoff = time.time() - max_age_s
    for folder in WORK_DIR.glob("*_*"):
        if folder.name.startswith(("upload_", "view_")) and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def only_uploads(paths: list[str | Path]) -> None:
    """Refuse (`gr.Error`) any path that is not a file in Gradio's upload folder: an API call can name any path."""
    from facet_vlm.io.paths import require_inside

    try:
        require_inside([path for path in paths if path], [gr.utils.get_upload_folder()])
    except FacetVLMError as error:
        raise gr.Error(str(error)) from None


def stage_upload(paths: list[str | Path]) -> Path:
    """Copy uploaded files into one folder under their own names (a .wrl finds its texture there) and return the
    scan to read. Raises `gr.Error` with the reason for unsupported, missing or oversized files."""
    files = [Path(path) for path in paths if path]
    if not files:
        raise gr.Error("No file uploaded: upload a scan or pick an example face.")
    unsupported = [path.name for path in files if path.suffix.lower() not in SCAN_SUFFIXES + COMPANION_SUFFIXES]
    if unsupported:
        raise gr.Error(f"Unsupported file type: {', '.join(unsupported)}. Upload a scan ({_supported_list()}) "
                       f"and optionally its texture/landmarks ({', '.join(COMPANION_SUFFIXES)}).")
    _check_sizes(files)
    prune_work_dir()
    folder = Path(tempfile.mkdtemp(dir=WORK_DIR, prefix="upload_"))
    for path in files:
        if path.suffix.lower() == ".zip":
            _extract_zip(path, folder)
        else:
            shutil.copy(path, folder / path.name)
    scans = sorted(path for path in folder.iterdir() if path.suffix.lower() in SCAN_SUFFIXES[:-1])
    if not scans:
        raise gr.Error(f"No scan among the uploaded files; upload one of {_supported_list()}.")
    if len(scans) > 1:
        raise gr.Error(f"Several scans uploaded ({', '.join(path.name for path in scans)}); upload one at a time.")
    return scans[0]


def read_scan(path: Path) -> Face:
    """Read a scan, turning any reader failure into a `gr.Error` that names the file (not the server's temporary
    folder) and the problem."""
    from facet_vlm.errors import MissingTextureError
    from facet_vlm.io import read_face

    try:
        return read_face(path)
    except MissingTextureError:
        raise gr.Error(f"{path.name}: its texture image was not uploaded. Upload the texture (and landmark) files "
                       "together with the scan, or a .zip of the scan's folder.") from None
    except FacetVLMError as error:
        raise gr.Error(_public_message(error, path)) from None
    except Exception as error:  # a malformed upload must give a message, never take the app down
        raise gr.Error(f"{path.name}: could not read the scan ({type(error).__name__}: {error}).") from None


def _public_message(error: Exception, path: Path) -> str:
    """The error text with the server-side folder of the upload removed."""
    return str(error).replace(f"{path.parent}{os.sep}", "")


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def view_gallery(face: Face, size: int = PREVIEW_SIZE) -> list[tuple[np.ndarray, str]]:
    """One image per rendered view: texture | depth | normals side by side, captioned with the view angles."""
    from facet_vlm.geometry import DEFAULT_VIEWS, render_views

    images, _ = render_views(face, views=DEFAULT_VIEWS, size=size, channels=("texture", "depth", "normal"))
    gallery = []
    for (yaw, pitch), view in zip(DEFAULT_VIEWS, images):
        texture = view[0:3].transpose(1, 2, 0)
        depth = np.repeat(view[3:4], 3, axis=0).transpose(1, 2, 0)
        normal = ((view[4:7] + 1.0) / 2.0).transpose(1, 2, 0) * (view[3:4].transpose(1, 2, 0) > 0)
        strip = _to_uint8(np.concatenate([texture, depth, normal], axis=1))
        gallery.append((strip, f"yaw {yaw:+.0f}°, pitch {pitch:+.0f}°: texture | depth | normals"))
    return gallery


def export_glb(face: Face, out_path: Path) -> Path:
    """Write the scan as a binary glTF for the 3D viewer: centred, with its texture or vertex colours."""
    import trimesh
    from PIL import Image

    vertices = face.vertices - face.vertices.mean(axis=0)
    if face.uv is not None and face.texture is not None:
        visual = trimesh.visual.TextureVisuals(uv=face.uv, image=Image.fromarray(face.texture))
    elif face.colors is not None:
        visual = trimesh.visual.ColorVisuals(vertex_colors=face.colors)
    else:
        visual = None
    mesh = trimesh.Trimesh(vertices=vertices, faces=face.faces, visual=visual, process=False)
    mesh.export(out_path)
    return out_path


def is_sequence_zip(path: Path) -> bool:
    """A .zip holding several scan files: a 4D sequence (a scan's .zip holds one scan and its companions)."""
    try:
        with zipfile.ZipFile(path) as bundle:
            scans = [name for name in bundle.namelist() if Path(name).suffix.lower() in SCAN_SUFFIXES[:-1]]
    except zipfile.BadZipFile:
        return False
    return len(scans) > 1


def stage_sequence(archive: Path) -> list[str]:
    """Extract a sequence .zip into a per-request folder (unsafe paths and oversized archives refused) and return
    its frame files in frame order."""
    from facet_vlm.data.sequences import sequence_frames

    _check_sizes([archive])
    prune_work_dir()
    folder = Path(tempfile.mkdtemp(dir=WORK_DIR, prefix="upload_"))
    try:
        return sequence_frames(archive, extract_to=folder, max_zip_bytes=int(MAX_UNZIPPED_MB * 2**20))
    except FacetVLMError as error:
        raise gr.Error(_public_message(error, archive).replace(f"{folder}{os.sep}", "")) from None


def classify_sequence(model: ExpressionRecognitionPipeline, frames: list[str]) -> dict[str, Any]:
    """``{"scores": label -> probability, "frames": names of the frames used, "frame_scores": per frame label ->
    probability (temporal models; [] for static models, which see the apex frame alone)}``."""
    try:
        result = model(tuple(frames), frame_scores=True)
    except FacetVLMError as error:
        raise gr.Error(_public_message(error, Path(frames[0]))) from None
    if isinstance(result, list):
        return {"scores": {row["label"]: row["score"] for row in result}, "frames": [], "frame_scores": []}
    labels = [model.model.config.id2label[index] for index in range(len(result["frame_scores"][0]))]
    return {"scores": {row["label"]: row["score"] for row in result["scores"]}, "frames": result["frames"],
            "frame_scores": [dict(zip(labels, row)) for row in result["frame_scores"]]}


def frame_strip(frames: list[str], names: list[str], size: int = PREVIEW_SIZE) -> list[tuple[np.ndarray, str]]:
    """The frontal texture render of each frame named in `names` (or of every frame), captioned with its name."""
    from facet_vlm.geometry import render_views

    by_name = {Path(frame).name: frame for frame in frames}
    strip = []
    for name in names or [Path(frame).name for frame in frames]:
        images, _ = render_views(read_scan(Path(by_name[name])), views=[(0.0, 0.0)], size=size,
                                 channels=("texture",))
        strip.append((_to_uint8(images[0].transpose(1, 2, 0)), name))
    return strip


def plot_frame_scores(frame_scores: list[dict[str, float]], names: list[str]) -> Any:
    """Line plot: the probability of each class (one line) over the frames (x axis), or None without frames."""
    if not frame_scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.2))
    for label in frame_scores[0]:
        axis.plot(range(len(names)), [row[label] for row in frame_scores], marker="o", label=label)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_xlabel("frame")
    axis.set_ylabel("probability")
    axis.legend(fontsize=7, ncol=2, loc="upper right")
    figure.tight_layout()
    return figure


def probabilities(model: ExpressionRecognitionPipeline, face: Face, neutral: Face | None = None
                  ) -> dict[str, float]:
    """Label -> probability for every class of the model; `neutral`: the same person's neutral scan, for a model
    with a neutral reference."""
    rows = model(face, neutral=neutral) if neutral is not None else model(face)
    return {row["label"]: row["score"] for row in rows}


def neutral_example(examples: dict[str, Path], example: str) -> Path | None:
    """The neutral scan of an example face's subject (the example named "<subject> neutral"), if there is one."""
    return examples.get(f"{example.rsplit(' ', 1)[0]} neutral")


# ---------------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------------


def build_demo(models: dict[str, ExpressionRecognitionPipeline], examples: dict[str, Path],
               offline: bool, video_models: dict[str, VideoEmotionRecognitionPipeline] | None = None,
               video_offline: bool = False, notes: dict[str, str] | None = None,
               video_notes: dict[str, str] | None = None) -> gr.Blocks:
    """The Blocks UI and its API endpoints (/analyze for the UI, /predict for one file, /analyze_video when there
    are video models): the 3D tab here, the video tab in `video_tab`. `notes` / `video_notes` (from `load_models`)
    say which folder or Hub id each model runs."""
    model_names = list(models)

    def pick_model(name: str | None) -> ExpressionRecognitionPipeline:
        if not name:
            return models[model_names[0]]
        if name not in models:
            raise gr.Error(f"Unknown model {name!r}; available: {', '.join(model_names)}.")
        return models[name]

    def analyze(files: list[str] | None, example: str | None, model_name: str | None,
                neutral_files: list[str] | None = None):
        """Render, show and classify the uploaded scan (or the chosen example when nothing is uploaded), against the
        uploaded neutral scan of the same person when the model takes a neutral reference."""
        only_uploads([*(files or []), *(neutral_files or [])])
        if files:
            neutral = stage_upload(neutral_files) if neutral_files else None
            return analyze_scan(stage_upload(files), model_name, neutral)
        return show_example(example, model_name)

    def show_example(example: str | None, model_name: str | None):
        """Render, show and classify a bundled example face (against its subject's neutral example scan when the
        model takes a neutral reference)."""
        if not example:
            raise gr.Error("Upload a scan or pick an example face first.")
        if example not in examples:
            raise gr.Error(f"Unknown example {example!r}; choose one of {', '.join(examples)}.")
        neutral = neutral_example(examples, example) if pick_model(model_name).needs_neutral else None
        return analyze_scan(examples[example], model_name, neutral)

    def analyze_scan(scan: Path, model_name: str | None, neutral_scan: Path | None = None):
        face = read_scan(scan)
        model = pick_model(model_name)
        if model.needs_neutral and neutral_scan is None:
            raise gr.Error("This model compares the scan with the same person's neutral scan (a neutral reference): "
                           "upload that scan (and its texture and landmark files) under \"Neutral scan\".")
        if neutral_scan is not None and not model.needs_neutral:
            raise gr.Error("This model takes no neutral reference; remove the neutral scan.")
        neutral = read_scan(neutral_scan) if neutral_scan is not None else None
        try:
            gallery = view_gallery(face)
            viewer = export_glb(face, Path(tempfile.mkdtemp(dir=WORK_DIR, prefix="view_")) / "scan.glb")
            scores = probabilities(model, face, neutral)
        except FacetVLMError as error:
            raise gr.Error(_public_message(error, scan)) from None
        top = max(scores, key=scores.get)
        summary = f"**{scan.name}**: {face.num_vertices} vertices, {face.num_faces} triangles → **{top}**"
        return gallery, str(viewer), scores, summary

    def predict(scan_file: str | None, model_name: str | None = None) -> dict[str, float]:
        """Expression probabilities of one uploaded scan file (or a .zip with the scan and its companions)."""
        only_uploads([scan_file] if scan_file else [])
        if not scan_file:
            raise gr.Error("No file given.")
        if Path(scan_file).suffix.lower() == ".zip" and is_sequence_zip(Path(scan_file)):
            return classify_sequence(pick_model(model_name), stage_sequence(Path(scan_file)))["scores"]
        if pick_model(model_name).needs_neutral:
            raise gr.Error("This model compares the scan with the same person's neutral scan: call /analyze with "
                           "the scan and its neutral scan (its last input).")
        scan = stage_upload([scan_file])
        face = read_scan(scan)
        try:
            return probabilities(pick_model(model_name), face)
        except FacetVLMError as error:
            raise gr.Error(_public_message(error, scan)) from None

    with gr.Blocks(title="FACET-VLM: 3D facial expression recognition", analytics_enabled=False,
                   delete_cache=(WORK_MAX_AGE_S, WORK_MAX_AGE_S)) as demo:
        gr.Markdown("# FACET-VLM: 3D facial expression recognition\n"
                    "Upload a 3D face scan or pick an example; see the views the model renders, the scan in 3D and "
                    "the expression probabilities.")
        if offline:
            gr.Markdown(OFFLINE_NOTE, elem_id="offline-note")
        elif notes:
            gr.Markdown("Models: " + "; ".join(notes.values()) + ".", elem_id="model-sources")
        with gr.Tab("3D scan"):
            files, neutral_files, example, model_choice, run, summary, label, viewer, gallery = scan_tab(
                examples, model_names)
        outputs = [gallery, viewer, label, summary]
        run.click(analyze, [files, example, model_choice, neutral_files], outputs, api_name="analyze")
        example.input(show_example, [example, model_choice], outputs, api_visibility="private")
        with gr.Tab("4D sequence"):
            sequence_tab(pick_model, model_choice)
        if video_models:
            with gr.Tab("Face video"):
                video_tab(video_models, video_offline, video_notes)

        api_file = gr.File(visible=False)
        api_label = gr.Label(visible=False)
        api_file.upload(predict, [api_file, model_choice], api_label, api_name="predict")
    return demo


def scan_tab(examples: dict[str, Path], model_names: list[str]) -> tuple[Any, ...]:
    """The components of the 3D-scan tab (inside the Blocks context), in the order `build_demo` wires them."""
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Scan files", file_count="multiple",
                            file_types=list(SCAN_SUFFIXES + COMPANION_SUFFIXES))
            neutral_files = gr.File(label="Neutral scan", file_count="multiple",
                                    file_types=list(SCAN_SUFFIXES + COMPANION_SUFFIXES))
            example = gr.Dropdown(choices=list(examples), value=next(iter(examples), None),
                                  label="Example face", info="used when no file is uploaded")
            model_choice = gr.Radio(choices=model_names, value=model_names[0], label="Model",
                                    interactive=len(model_names) > 1)
            run = gr.Button("Recognise expression", variant="primary")
            summary = gr.Markdown()
        with gr.Column(scale=2):
            label = gr.Label(label="Expression probabilities")
            viewer = gr.Model3D(label="3D scan", clear_color=(1.0, 1.0, 1.0, 1.0), height=360)
    gallery = gr.Gallery(label="Rendered views", columns=1, height="auto")
    gr.Markdown(f"Accepted: a scan ({_supported_list()}) plus its texture and landmark files "
                f"({', '.join(COMPANION_SUFFIXES)}), at most {MAX_UPLOAD_MB:.0f} MB. A model with a neutral "
                "reference also needs the same person's neutral scan (\"Neutral scan\"); the example faces bring "
                "their own.")
    return files, neutral_files, example, model_choice, run, summary, label, viewer, gallery


def sequence_tab(pick_model: Any, model_choice: Any) -> None:
    """The 4D tab (inside the Blocks context): a sequence .zip in; a frame strip, per-frame probabilities and the
    sequence's prediction out (the model is the one chosen in the 3D tab)."""

    def analyze_sequence(archive: str | None, model_name: str | None):
        """Frame strip, sequence probabilities, per-frame probability plot and a summary of one sequence .zip."""
        only_uploads([archive] if archive else [])
        if not archive:
            raise gr.Error("Upload a .zip of one sequence's frame files first.")
        if Path(archive).suffix.lower() != ".zip":
            raise gr.Error(f"{Path(archive).name}: upload the sequence as a .zip of its frame files.")
        frames = stage_sequence(Path(archive))
        result = classify_sequence(pick_model(model_name), frames)
        names = result["frames"]
        top = max(result["scores"], key=result["scores"].get)
        used = f"{len(names)} of them: {', '.join(names)}" if names else "the apex frame (static model)"
        summary = f"**{Path(archive).name}**: {len(frames)} frames, the model saw {used} → **{top}**"
        return frame_strip(frames, names), result["scores"], plot_frame_scores(result["frame_scores"], names), summary

    gr.Markdown("Upload a .zip holding one expression sequence: numbered frame files (e.g. `000.wrl`, `001.wrl`, "
                "... with their textures) in one folder. Each frame's curve is that frame classified alone.")
    with gr.Row():
        with gr.Column(scale=1):
            archive = gr.File(label="Sequence .zip", file_types=[".zip"])
            run = gr.Button("Recognise sequence", variant="primary")
            summary = gr.Markdown()
        with gr.Column(scale=2):
            label = gr.Label(label="Sequence expression probabilities")
            plot = gr.Plot(label="Probability of each class per frame")
    strip = gr.Gallery(label="Frames the model sees", columns=8, height="auto")
    run.click(analyze_sequence, [archive, model_choice], [strip, label, plot, summary], api_name="analyze_sequence")


def video_tab(models: dict[str, VideoEmotionRecognitionPipeline], offline: bool,
              notes: dict[str, str] | None = None) -> None:
    """The face-video tab (inside the Blocks context): a clip in; valence, arousal, heart rate and pulse out."""
    from facet_vlm.evaluation import plot_pulse

    names = list(models)

    def analyze_video(video: str | None, model_name: str | None, person_clips: list[str] | None = None):
        """Emotion scores, heart rate and pulse plot of one face video; `person_clips` (other clips of the same
        person) give a model with ``pulse_reference="person_mean"`` the person's reference pulse map."""
        if not video:
            raise gr.Error("Upload a face video or record one with the webcam first.")
        path = Path(video)
        clips = [Path(clip) for clip in person_clips or [] if clip]
        only_uploads(clips)
        for item in [path, *clips]:
            if item.suffix.lower() not in VIDEO_SUFFIXES:
                raise gr.Error(f"{item.name}: unsupported video type; upload one of {', '.join(VIDEO_SUFFIXES)}.")
        _check_sizes([path, *clips])
        runner = models[model_name or names[0]]
        options = {}
        if clips:
            try:
                options["pulse_reference"] = runner.processor.pulse_reference([str(clip) for clip in clips])
            except FacetVLMError as error:
                raise gr.Error(_public_message(error, clips[0])) from None
        try:
            result = runner(str(path), **options)
        except FacetVLMError as error:
            raise gr.Error(_public_message(error, path)) from None
        scores = {head: {row["label"]: row["score"] for row in result[head]} for head in ("valence", "arousal")}
        figure = plot_pulse(result["pulse"], result["fps"], result["heart_rate"], title=path.name)
        return scores["valence"], scores["arousal"], heart_rate_text(result), figure

    gr.Markdown("Upload a short face video (a few seconds, face visible, steady light) or record one with the "
                "webcam; the model reads the face and the pulse in the skin colour.")
    if offline:
        gr.Markdown(VIDEO_OFFLINE_NOTE, elem_id="video-offline-note")
    elif notes:
        gr.Markdown("Models: " + "; ".join(notes.values()) + ".", elem_id="video-model-sources")
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Face video", sources=["upload", "webcam"])
            choice = gr.Radio(choices=names, value=names[0], label="Video model", interactive=len(names) > 1)
            person_clips = gr.File(label="Other clips of the same person (for a model that reads the pulse against "
                                         "the person's own level; not all of one emotion)",
                                   file_count="multiple", file_types=list(VIDEO_SUFFIXES))
            run = gr.Button("Analyse video", variant="primary")
        with gr.Column(scale=2):
            heart = gr.Markdown()
            with gr.Row():
                valence = gr.Label(label="Valence")
                arousal = gr.Label(label="Arousal")
            pulse = gr.Plot(label="Pulse (rPPG)")
    run.click(analyze_video, [video, choice, person_clips], [valence, arousal, heart, pulse],
              api_name="analyze_video")


def heart_rate_text(result: dict[str, Any]) -> str:
    """The heart-rate Markdown of the video tab: the rate, its SNR and, when the pipeline flags it, a warning with
    the reasons (`facet_vlm.physio.PulseResult`)."""
    text = (f"**Heart rate:** {result['heart_rate']:.1f} bpm (rPPG over {len(result['pulse'])} frames, SNR "
            f"{result['heart_rate_snr_db']:+.1f} dB)")
    over_time = result["heart_rate_over_time"]["heart_rates"]
    if len(over_time) > 1:
        text += f"; over time {min(over_time):.0f} to {max(over_time):.0f} bpm"
    if result["heart_rate_low_confidence"]:
        text += "\n\n**Low confidence:** " + "; ".join(result["heart_rate_warnings"])
    return text


def launch_demo(demo: gr.Blocks, **kwargs: Any):
    """Launch with the Space's upload limit and offline theme (extra keyword arguments go to ``launch``)."""
    return demo.launch(max_file_size=f"{MAX_UPLOAD_MB:g}mb", theme=THEME, **kwargs)


MODELS, NOTES, OFFLINE = load_models()
VIDEO_MODELS, VIDEO_NOTES, VIDEO_OFFLINE = load_video_models()
EXAMPLES = make_examples(WORK_DIR / "examples")
demo = build_demo(MODELS, EXAMPLES, OFFLINE, VIDEO_MODELS, VIDEO_OFFLINE, NOTES, VIDEO_NOTES)

if __name__ == "__main__":
    launch_demo(demo)
