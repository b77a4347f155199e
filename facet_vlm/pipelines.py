"""transformers pipelines of the library: `pipeline` builds them directly; `register_pipelines` (run by `pipeline`)
registers both tasks with transformers' `PIPELINE_REGISTRY`, so that ``transformers.pipeline(task, ...)`` serves them.

    >>> import facet_vlm, transformers
    >>> facet_vlm.register_pipelines()
    >>> classifier = transformers.pipeline("expression-recognition", model="runs/exp1/model", trust_remote_code=True)
    >>> classifier("F0001_HA04WH_F3D.wrl", top_k=2)
    [{'label': 'happiness', 'score': 0.91}, {'label': 'surprise', 'score': 0.04}]

    >>> video = transformers.pipeline("video-emotion-recognition", model="runs/physio/model")
    >>> video("clip.mp4")
    {'valence': [...], 'arousal': [...], 'emotion': None, 'heart_rate': 71.8, 'heart_rate_low_confidence': False,
     'heart_rate_snr_db': -1.2, 'heart_rate_warnings': [], 'heart_rate_over_time': {...}, 'face': {...},
     'pulse': [...], 'fps': 30.0}

``expression-recognition`` (FACET-VLM, CoupleFER, AFNet-M): a scan path (any format `facet_vlm.io.read_face` reads)
or a `Face` → a list of ``{"label", "score"}`` dicts sorted by score (all classes unless ``top_k``); a list of inputs
gives one such list per input. ``video-emotion-recognition`` (the physio-prompt model): a face video (.mp4/.avi or
any file OpenCV decodes, or RGB frames (T, H, W, 3) with ``fps=``) → valence and arousal scores (and discrete
emotions when the model has that head), the heart rate (bpm) with its quality (SNR, a low-confidence flag and its
reasons, the heart rate over time, how the face was found) and the rPPG pulse signal the model was prompted with.
A video file is decoded one frame at a time (memory does not grow with its length) and a file that is not a video is
refused with a `FormatError` naming it.
The model's own processor (`facet_vlm.registry`, loaded through `AutoProcessor`) builds the inputs, so training,
these pipelines and ``scripts/predict.py`` see the same tensors. `pipeline` is a shortcut that also takes a model
instance and loads PEFT adapter folders on their base model.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .errors import ConfigError
from .face import Face
from .registry import (
    MODEL_REGISTRY,
    SCAN_TASK,
    VIDEO_TASK,
    check_model_files,
    entry_for_class,
    find_local_model,
    local_model_dirs,
    register_processors,
)

logger = logging.getLogger(__name__)

TASKS = (SCAN_TASK, VIDEO_TASK)

ScanInput = str | PathLike | Face


def _sorted_scores(probabilities: torch.Tensor, labels: Sequence[str], top_k: int | None) -> list[dict[str, Any]]:
    """``{"label", "score"}`` dicts of one probability vector, best first, the first `top_k` of them."""
    order = torch.argsort(probabilities, descending=True).tolist()
    if top_k is not None:
        order = order[:max(int(top_k), 0)]
    return [{"label": labels[index], "score": float(probabilities[index])} for index in order]


class _FacetPipeline(Pipeline):
    """What both pipelines share: the processor comes from `AutoProcessor` (or is given), inputs are restricted to
    the arguments of the model's ``forward``, no tokenizer or image processor is loaded."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, model: Any, processor: Any = None, **kwargs: Any):
        if processor is None:
            processor = load_processor(model)
        super().__init__(model=model, processor=processor, **kwargs)
        self.model.eval()
        self._forward_names = set(inspect.signature(self.model.forward).parameters)

    def model_inputs(self, encoded: Any) -> dict[str, torch.Tensor]:
        return {name: value for name, value in dict(encoded).items() if name in self._forward_names}

    #: Output fields `postprocess` reads (only these leave `_forward`, so batches split cleanly per input).
    output_names: tuple[str, ...] = ("logits",)

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        extra = {name: value for name, value in model_inputs.items() if name.startswith("_")}
        outputs = self.model(**{name: value for name, value in model_inputs.items() if not name.startswith("_")})
        return {**{name: outputs[name] for name in self.output_names if outputs.get(name) is not None}, **extra}

    def get_iterator(self, inputs: Any, num_workers: int, batch_size: int, preprocess_params: dict,
                     forward_params: dict, postprocess_params: dict) -> Any:
        """transformers' iterator with a collate that stacks our tensors (its own pads through a tokenizer)."""
        from torch.utils.data import DataLoader
        from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

        if not isinstance(inputs, Sequence):
            inputs = list(inputs)
        dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_stack_items)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


def _stack_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch of preprocessed inputs: tensors (each with a batch axis of 1) concatenated, other values listed."""
    return {name: torch.cat([item[name] for item in items]) if isinstance(items[0][name], torch.Tensor)
            else [item[name] for item in items] for name in items[0]}


class ExpressionRecognitionPipeline(_FacetPipeline):
    """Scan(s) or 4D sequence(s) in, sorted ``{"label", "score"}`` dicts out: read → processor → model → softmax.

    A sequence is a folder of frame files, a ``.zip`` of one, or a tuple of frame paths (a list of inputs is a
    batch, as for every pipeline; wrap one sequence's frames in a tuple or pass a list of such lists);
    `facet_vlm.data.sequences.sequence_frames` orders the frames by frame number. The temporal model (FACET-VLM)
    sees T frames chosen as in its training (the frame selection of ``facet_vlm_training.json`` next to the
    model, else 8 frames, or the model's ``num_frames`` when fewer, uniformly); the static models (CoupleFER,
    AFNet-M) see the sequence's apex frame (the frame farthest from the first, `apex_frame_index`), as in training.

    Call arguments: ``top_k`` (default: every class), ``num_frames`` / ``frame_mode`` (override the frame
    selection), ``frame_scores=True`` (sequences: return ``{"scores", "frames", "frame_scores"}``, where
    ``frame_scores[t]`` are the class probabilities of the t-th selected frame alone, in class-id order), and
    transformers' ``batch_size`` (inputs per forward pass; sequences of one batch must have equal T).

    A model with a neutral reference (``neutral_reference`` of AFNet-M, CoupleFER or FACET-VLM) compares each scan
    with the same person's neutral scan: ``neutral=`` (a path or `Face`, the same for every input of the call); a
    static model's sequence takes its own first frame as its neutral reference, as in training. A model without a
    reference refuses ``neutral=`` rather than ignore it.
    """

    def _sanitize_parameters(self, top_k: int | None = None, num_frames: int | None = None,
                             frame_mode: str | None = None, frame_scores: bool | None = None,
                             neutral: ScanInput | None = None, **kwargs: Any):
        preprocess = {name: value for name, value in (("num_frames", num_frames), ("frame_mode", frame_mode),
                                                       ("frame_scores", frame_scores), ("neutral", neutral))
                      if value is not None}
        return preprocess, {}, ({"top_k": top_k} if top_k is not None else {})

    @property
    def needs_neutral(self) -> bool:
        """The model takes a neutral reference (``neutral_reference``)."""
        return bool(getattr(self.model.config, "neutral_input_names", ()))

    def preprocess(self, item: ScanInput | Sequence[ScanInput], num_frames: int | None = None,
                   frame_mode: str | None = None, frame_scores: bool = False,
                   neutral: ScanInput | None = None) -> dict[str, Any]:
        if neutral is not None and not self.needs_neutral:
            raise ConfigError("this model takes no neutral reference (its config's neutral_reference is 'none'), so "
                              "the neutral scan would be ignored; drop neutral=... (--neutral) or use a model trained "
                              "with neutral_reference='difference'")
        if not is_sequence_input(item):
            if self.needs_neutral and neutral is None:
                raise ConfigError("this model compares each scan with the same person's neutral scan "
                                  "(neutral_reference); pass it: pipeline(scan, neutral=NEUTRAL_SCAN), "
                                  "scripts/predict.py --neutral NEUTRAL_SCAN")
            if self.needs_neutral:
                return self.model_inputs(self.processor(faces=[item], neutral_faces=[neutral]))
            return self.model_inputs(self.processor(faces=[load_face(item)]))
        return self.preprocess_sequence(item, num_frames, frame_mode, frame_scores)

    def preprocess_sequence(self, item: Any, num_frames: int | None, frame_mode: str | None,
                            frame_scores: bool) -> dict[str, Any]:
        """Model inputs of one sequence (`sequence_input` does the reading), plus the selected frames' names."""
        entry = MODEL_REGISTRY.get(getattr(self.model.config, "model_type", None))
        temporal = entry is not None and entry.temporal
        selection = self.frame_selection(num_frames, frame_mode) if temporal else None
        names, pixel_values = sequence_input(item, self.processor, selection, neutral_frame=self.needs_neutral)
        if temporal:
            encoded = {"pixel_values": pixel_values}
        else:
            encoded = self.model_inputs(pixel_values)
            frame_scores = False
        return {**encoded, "_frames": names, "_frame_scores": frame_scores}

    def frame_selection(self, num_frames: int | None, frame_mode: str | None) -> Any:
        """The training frame selection of the model (see the class doc), with the call's overrides."""
        from .data.sequences import FrameSelection

        saved = training_frame_selection(getattr(self.model, "name_or_path", None))
        if saved is None:
            saved = {"num_frames": min(8, int(getattr(self.model.config, "num_frames", 8)))}
        if num_frames is not None:
            saved["num_frames"] = int(num_frames)
        if frame_mode is not None:
            saved["mode"] = frame_mode
        return FrameSelection(**saved)

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        per_frame = model_inputs.get("_frame_scores")
        outputs = super()._forward(model_inputs)
        if per_frame and (per_frame is True or any(per_frame)):
            pixel_values = model_inputs["pixel_values"]
            outputs["_frame_logits"] = torch.stack([self.model(pixel_values=pixel_values[:, t:t + 1]).logits
                                                    for t in range(pixel_values.shape[1])], dim=1)
        return outputs

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None) -> Any:
        probabilities = model_outputs["logits"][0].float().softmax(dim=-1).cpu()
        labels = [self.model.config.id2label[index] for index in range(len(probabilities))]
        scores = _sorted_scores(probabilities, labels, top_k)
        frame_logits = model_outputs.get("_frame_logits")
        if frame_logits is None:
            return scores
        frames = model_outputs["_frames"]
        frames = frames[0] if frames and isinstance(frames[0], list) else frames
        per_frame = frame_logits[0].float().softmax(dim=-1).cpu().tolist()
        return {"scores": scores, "frames": list(frames), "frame_scores": per_frame}


class VideoEmotionRecognitionPipeline(_FacetPipeline):
    """A face video in; valence/arousal (and emotion) scores, heart rate and pulse signal out.

    Call arguments: ``fps`` (frames given as an array need it; for a file it overrides the container's rate),
    ``top_k`` (of the emotion head) and ``pulse_reference``: the person's reference pulse map
    (`PhysioPromptProcessor.pulse_reference` of several of their clips), required by a model trained with
    ``pulse_reference="person_mean"`` and refused by the others.
    """

    output_names = ("valence_logits", "arousal_logits", "emotion_logits")

    def _sanitize_parameters(self, fps: float | None = None, top_k: int | None = None,
                             pulse_reference: np.ndarray | None = None, **kwargs: Any):
        preprocess = {"fps": fps} if fps is not None else {}
        if pulse_reference is not None:
            preprocess["pulse_reference"] = pulse_reference
        return preprocess, {}, ({"top_k": top_k} if top_k is not None else {})

    def preprocess(self, video: str | PathLike | np.ndarray, fps: float | None = None,
                   pulse_reference: np.ndarray | None = None) -> dict[str, Any]:
        relative = getattr(self.model.config, "pulse_reference", "none") == "person_mean"
        if relative and pulse_reference is None:
            raise ConfigError("this model reads the pulse relative to the person's own clips (pulse_reference="
                              "'person_mean'): pass pulse_reference=processor.pulse_reference([clips of the person]) "
                              "(predict.py: --pulse_reference CLIP CLIP ...)")
        if not relative and pulse_reference is not None:
            raise ConfigError("this model reads each clip's pulse as measured (pulse_reference='none'); a "
                              "pulse_reference is for models trained with pulse_reference='person_mean'")
        arrays, pulse = self.processor.analyze(video, fps)
        if relative:
            arrays = {**arrays, "tfr_values": arrays["tfr_values"] - self.processor.checked_reference(
                pulse_reference, np.asarray(arrays["tfr_values"]).shape)}
        encoded = {name: torch.from_numpy(np.asarray(value))[None] for name, value in arrays.items()}
        return {**self.model_inputs(encoded), "_pulse": pulse}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None) -> dict[str, Any]:
        pulse = model_outputs["_pulse"]
        pulse = pulse[0] if isinstance(pulse, list) else pulse
        result: dict[str, Any] = {}
        for head in ("valence", "arousal"):
            probabilities = model_outputs[f"{head}_logits"][0].float().softmax(dim=-1).cpu()
            result[head] = _sorted_scores(probabilities, [f"low {head}", f"high {head}"], None)
        emotion = model_outputs.get("emotion_logits")
        result["emotion"] = None
        if emotion is not None:
            names = list(getattr(self.model.config, "emotion_labels", None) or range(emotion.shape[-1]))
            result["emotion"] = _sorted_scores(emotion[0].float().softmax(dim=-1).cpu(), [str(n) for n in names],
                                               top_k)
        result.update(heart_rate=float(pulse["heart_rate"]), heart_rate_low_confidence=bool(pulse["low_confidence"]),
                      heart_rate_snr_db=float(pulse["snr_db"]), heart_rate_warnings=list(pulse["reasons"]),
                      heart_rate_over_time=pulse["heart_rate_over_time"], face=pulse["face"],
                      pulse=pulse["signal"].tolist(), fps=pulse["fps"])
        return result


def is_sequence_input(item: Any) -> bool:
    """A 4D sequence: a folder, a ``.zip`` or a list/tuple of frame paths (a single scan path or `Face` is not)."""
    if isinstance(item, list | tuple):
        return True
    if isinstance(item, str | PathLike):
        return Path(item).is_dir() or Path(item).suffix.lower() == ".zip"
    return False


def sequence_input(item: Any, processor: Any, selection: Any = None,
                   neutral_frame: bool = False) -> tuple[list[str], Any]:
    """Read one sequence (folder, ``.zip`` or frame paths; `facet_vlm.data.sequences.sequence_frames`) into model
    inputs: with a `FrameSelection`, the selected frames' ``pixel_values`` (1, T, V, C, H, W) of the temporal model
    (`facet_vlm.data.sequence_cache.sequence_features`, uncached); without one, the processor's inputs of the
    apex frame (static models), with the first frame as its neutral reference when `neutral_frame` (a model with a
    neutral reference). Returns the names of the frames used and the inputs. A ``.zip`` is extracted into a
    temporary folder that is removed afterwards.

    Raises:
        SequenceError: no frames, a missing, empty or unreadable frame (named), an unsafe archive.
    """
    import shutil
    import tempfile

    from .data.prepare import ProcessorFeatures
    from .data.sequence_cache import sequence_features
    from .data.sequences import apex_frame_index, sequence_frames

    scratch = None
    if isinstance(item, str | PathLike) and Path(item).suffix.lower() == ".zip":
        scratch = tempfile.mkdtemp(prefix="facet_vlm_sequence_")
    try:
        frames = sequence_frames(list(item) if isinstance(item, list | tuple) else item, extract_to=scratch)
        if selection is None:
            frame = frames[apex_frame_index(frames)]
            if neutral_frame:
                return [Path(frame).name], processor(faces=[frame], neutral_faces=[frames[0]])
            return [Path(frame).name], processor(faces=[load_face(frame)])
        selected, features = sequence_features(frames, ProcessorFeatures(processor), selection)
        return [Path(path).name for path in selected], torch.from_numpy(features["pixel_values"])[None]
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def training_frame_selection(model_dir: str | PathLike | None) -> dict[str, Any] | None:
    """The frame selection (`FrameSelection` fields) a model was trained with: ``features.frames`` of the training
    record ``facet_vlm_training.json`` (`facet_vlm.evaluation.TRAINING_RECORD`) in `model_dir`; None when absent."""
    if not model_dir or not (Path(model_dir) / "facet_vlm_training.json").is_file():
        return None
    record = json.loads((Path(model_dir) / "facet_vlm_training.json").read_text(encoding="utf-8"))
    frames = record.get("features", {}).get("frames")
    return dict(frames) if isinstance(frames, dict) else None


def load_face(item: ScanInput) -> Face:
    """A `Face` from a path (read with `facet_vlm.io.read_face`) or the face itself."""
    if isinstance(item, Face):
        return item
    if not isinstance(item, str | PathLike):
        raise ConfigError(f"pipeline input must be a scan path or a Face, got {type(item).__name__}")
    from .io import read_face

    return read_face(item)


def register_pipelines() -> None:
    """Register both tasks with transformers' `PIPELINE_REGISTRY` (their Auto classes from `facet_vlm.registry`) and
    the processors with `AutoProcessor` (the pipelines load processors through it). Idempotent."""
    import transformers
    from transformers.pipelines import PIPELINE_REGISTRY

    register_processors()
    for task, pipeline_class in ((SCAN_TASK, ExpressionRecognitionPipeline),
                                 (VIDEO_TASK, VideoEmotionRecognitionPipeline)):
        auto_classes = tuple(dict.fromkeys(getattr(transformers, entry.auto_class)
                                           for entry in MODEL_REGISTRY.values() if entry.task == task))
        if task not in PIPELINE_REGISTRY.supported_tasks:
            PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=auto_classes,
                                                type="multimodal")


def pipeline(task: str = SCAN_TASK, model: str | PathLike | torch.nn.Module | None = None, processor: Any = None,
             *, device: str | torch.device | None = None, top_k: int | None = None, batch_size: int = 1,
             **model_kwargs: Any) -> Pipeline:
    """A pipeline of this library from a model folder, a Hub id or a model instance.

    Like ``transformers.pipeline(task, model=...)``, and also: a folder holding a PEFT adapter
    (``adapter_config.json``) is loaded on its base model; the processor is the one saved with the model, else the
    registry's processor built from the model config; ``top_k`` sets the default of every call. Without ``model``
    it runs the trained model of this machine (`default_local_model`), and says which in the log.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown pipeline task {task!r}; supported: {', '.join(TASKS)}")
    register_pipelines()
    if model is None:
        model = default_local_model(task)
        logger.info("%s pipeline: no model given, using the trained model found locally: %s", task, model)
    source = None if isinstance(model, torch.nn.Module) else resolve_source(model)
    if source is not None:
        model = load_model(source, **model_kwargs)
    entry = MODEL_REGISTRY.get(getattr(model.config, "model_type", None))
    if entry is not None and entry.task != task:
        raise ConfigError(f"{type(model).__name__} serves the task {entry.task!r}, not {task!r}")
    processor = processor if processor is not None else load_processor(model, source)
    pipeline_class = VideoEmotionRecognitionPipeline if task == VIDEO_TASK else ExpressionRecognitionPipeline
    built = pipeline_class(model=model, processor=processor, task=task, batch_size=batch_size,
                           device=torch.device(device) if device is not None else model.device)
    if top_k is not None:
        built._postprocess_params["top_k"] = top_k
    return built


def default_local_model(task: str = SCAN_TASK) -> Path:
    """The trained model a pipeline of `task` runs when none is named: the first model found by
    `facet_vlm.registry.find_local_model` for the task's models, in registry order (FACET-VLM first). There is no
    random fallback here (the Space has one, clearly labelled): without a trained model this is a ConfigError that
    names the folders searched."""
    entries = [entry for entry in MODEL_REGISTRY.values() if entry.task == task]
    for entry in entries:
        found = find_local_model(entry.name)
        if found is not None:
            return found
    searched = [str(folder) for entry in entries for folder in local_model_dirs(entry.name)]
    raise ConfigError(f"no model given and no trained model found locally (searched {', '.join(searched) or 'nothing'}"
                      f" from {Path.cwd()}; FACET_VLM_LOCAL_MODELS replaces the list): pass model=<folder, Hub id or "
                      "model instance>, or train one (README: 'A trained model for the Space and the pipeline')")


#: Files of a Hub repository the pipeline needs (weights, configs, processor settings); never pickles.
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.txt", "*.jinja"]


def resolve_source(model: str | PathLike) -> str:
    """A local folder for a model argument: the folder itself, or the snapshot of a Hub repository (downloaded
    once, then read from the cache; with ``HF_HUB_OFFLINE=1`` only the cache is used)."""
    path = Path(model)
    if path.is_dir():
        return str(path)
    if path.exists() or str(model).count("/") != 1:
        raise ConfigError("model must be a folder written by save_pretrained or a Hub id ORG/NAME", model)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=str(model), allow_patterns=SNAPSHOT_PATTERNS)
    except (OSError, ValueError) as error:  # not on the Hub, not cached (offline), no access, malformed id
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"no model folder of that name, and the Hub has none to give: {reason}", model) from error


def load_model(source: str | PathLike, **kwargs: Any) -> torch.nn.Module:
    """A facet-vlm model from a folder or Hub id; PEFT adapter folders are applied to their base model (and merged)."""
    source = resolve_source(source)
    path = Path(source)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        adapter = json.loads((path / "adapter_config.json").read_text())
        base_source = adapter.get("base_model_name_or_path")
        if not base_source:
            raise ConfigError("adapter_config.json names no base_model_name_or_path", path / "adapter_config.json")
        base = load_model(base_source, **kwargs)
        return PeftModel.from_pretrained(base, path).merge_and_unload()
    config = check_model_files(source)
    for name in config.get("architectures") or []:
        entry = entry_for_class(name)
        if entry is not None and name == entry.model_name:
            return entry.model_class.from_pretrained(source, **kwargs)
        if entry is not None and name == entry.base_model_name:
            return entry.base_model_class.from_pretrained(source, **kwargs)
    raise ConfigError(f"config.json names no facet-vlm model class (architectures={config.get('architectures')})",
                      source)


def load_processor(model: torch.nn.Module, source: str | None = None) -> Any:
    """The processor saved next to the model (``processor_config.json``; a folder without one gives the processor
    matching its config.json), else the registry's processor built from the model's config."""
    entry = MODEL_REGISTRY.get(getattr(model.config, "model_type", None))
    if entry is None:
        raise ConfigError(f"no processor registered for {type(model).__name__}; pass processor=...")
    source = source or getattr(model, "name_or_path", None)
    if source and Path(source).is_dir():
        return entry.processor_class.from_pretrained(source)
    return entry.processor_class.from_config(model.config)


__all__ = ["ExpressionRecognitionPipeline", "VideoEmotionRecognitionPipeline", "check_model_files",
           "default_local_model", "load_face", "load_model", "load_processor", "pipeline", "register_pipelines",
           "resolve_source"]
