"""The one list of the library's models: each described once, read by training, evaluation, the pipelines,
publishing and the Space.

Adding a model = one `ModelEntry` here + its ``configuration_<name>.py``, ``modeling_<name>.py`` and processor file.

An entry names its classes by module and class name and imports them only when asked (`ModelEntry.config_class`,
...), from their own files rather than from the package ``__init__``: listing the registry imports no model, and
`register_auto_classes` works while ``facet_vlm`` or ``couple`` is still being imported (no import circle).

Auto classes (the choice, the same rule for all four models): the task Auto class
(`AutoModelForImageClassification` for the 3D/4D scan models, `AutoModelForVideoClassification` for the physio
video model) loads the *recognition* model, training loss included. `AutoModel` loads the model that maps inputs
to class logits without a training loss: FACET-VLM's `FacetVLMModel` (its zero-shot CLIP-style model: the same
weights and logits as `FacetVLMForExpressionRecognition`), and for the other three models, which define no such
class, the recognition model itself (CoupleFER's `CoupleFERModel` returns embeddings only, not logits). So
``AutoModel.from_pretrained(folder)(**inputs).logits`` gives the class scores for every model. `AutoProcessor`
loads the model's processor (``processor_config.json``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, FormatError

DataKind = Literal["scan", "video"]

#: Pipeline tasks of the library, registered with transformers' PIPELINE_REGISTRY by `facet_vlm.pipelines`.
SCAN_TASK = "expression-recognition"
VIDEO_TASK = "video-emotion-recognition"


@dataclass(frozen=True)
class ModelEntry:
    """One model family: where its classes live, what data it reads and which pipeline serves it.

    Args:
        name: the config's ``model_type`` and the ``--model`` value of ``scripts/train.py``.
        package: the package that holds the model's files (``facet_vlm`` or ``couple``).
        config_name / model_name / processor_name: class names.
        processor_module: module (in `package`) that defines the processor.
        data_kind: ``scan`` (a 3D face; FACET-VLM also takes 4D sequences of scans) or ``video`` (a face clip).
        task: the pipeline task (`SCAN_TASK` or `VIDEO_TASK`).
        auto_class: the task Auto class of transformers the model registers with (besides `AutoModel`).
        title: the model's name in cards and the Space.
        auto_model_name: the class `AutoModel` maps to (see the module doc); default: `model_name`.
        temporal: the model takes 4D sequences (T frames); a static scan model gets one frame per sequence (its
            apex frame, `facet_vlm.data.sequences.apex_rows`) on a sequence data set.
    """

    name: str
    package: str
    config_name: str
    model_name: str
    processor_name: str
    processor_module: str
    data_kind: DataKind
    task: str
    auto_class: str
    title: str
    auto_model_name: str = ""
    temporal: bool = False

    def _load(self, module: str, name: str) -> Any:
        return getattr(importlib.import_module(f"{self.package}.{module}"), name)

    @property
    def config_class(self) -> Any:
        return self._load(f"configuration_{self.name}", self.config_name)

    @property
    def model_class(self) -> Any:
        return self._load(f"modeling_{self.name}", self.model_name)

    @property
    def auto_model_class(self) -> Any:
        return self._load(f"modeling_{self.name}", self.auto_model_name or self.model_name)

    @property
    def processor_class(self) -> Any:
        return self._load(self.processor_module, self.processor_name)

    @property
    def is_video(self) -> bool:
        """Video models (face frames + pulse) read clips, not 3D scans."""
        return self.data_kind == "video"

    def from_pretrained_backbone(self, name_or_path: str, labels: Sequence[str], overrides: dict[str, Any]) -> Any:
        """A model whose CLIP towers come from `name_or_path` (the model class's ``from_clip``), new heads."""
        label_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)},
                        "num_labels": len(labels)}
        from_clip = getattr(self.model_class, "from_clip", None)
        if from_clip is None:
            raise ConfigError(f"{self.model_name} has no pretrained backbone to load; --init_from takes a directory "
                              f"saved by {self.model_name}.save_pretrained", name_or_path)
        return from_clip(name_or_path, **{**overrides, **label_kwargs})


MODEL_REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("facet_vlm", "facet_vlm", "FacetVLMConfig", "FacetVLMForExpressionRecognition",
                   "FacetVLMProcessor", "processing_facet_vlm", "scan", SCAN_TASK,
                   "AutoModelForImageClassification", "FACET-VLM", auto_model_name="FacetVLMModel",
                   temporal=True),
        ModelEntry("couplefer", "couple", "CoupleFERConfig", "CoupleFERForExpressionRecognition",
                   "CoupleFERProcessor", "processing_couple", "scan", SCAN_TASK,
                   "AutoModelForImageClassification", "CoupleFER"),
        ModelEntry("afnet_m", "couple", "AFNetMConfig", "AFNetMForExpressionRecognition",
                   "AFNetMProcessor", "processing_couple", "scan", SCAN_TASK,
                   "AutoModelForImageClassification", "AFNet-M"),
        ModelEntry("physio_prompt", "couple", "PhysioPromptConfig", "PhysioPromptForEmotionRecognition",
                   "PhysioPromptProcessor", "processing_physio_prompt", "video", VIDEO_TASK,
                   "AutoModelForVideoClassification", "Physio-facial prompt tuning"),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(MODEL_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of a model family (``facet_vlm``, ``couplefer``, ``afnet_m``, ``physio_prompt``)."""
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def entry_for_class(class_name: str) -> ModelEntry | None:
    """The entry whose model, config or processor class is called `class_name` (e.g. from ``architectures``)."""
    for entry in MODEL_REGISTRY.values():
        if class_name in (entry.model_name, entry.config_name, entry.processor_name):
            return entry
    return None


def make_processor(model_type: str, config: Any, overrides: dict[str, Any] | None = None) -> Any:
    """The processor matching a model config (``from_config``), with `overrides` (``--feature_overrides``) applied."""
    cls = model_entry(model_type).processor_class
    processor = cls.from_config(config)
    if overrides:
        settings = processor.to_dict()
        settings.pop("processor_class", None)
        unknown = sorted(set(overrides) - set(settings))
        if unknown:
            raise ConfigError(f"--feature_overrides {unknown} are not settings of {cls.__name__} "
                              f"(settings: {sorted(settings)})")
        processor = cls(**{**settings, **overrides})
    return processor


def register_auto_classes() -> None:
    """Register every model with `AutoConfig`, `AutoModel`, its task Auto class and `AutoProcessor`, and mark its
    classes for remote code, so that ``save_pretrained`` writes the model files and an ``auto_map``."""
    import transformers

    for entry in MODEL_REGISTRY.values():
        config_class, model_class, processor_class = entry.config_class, entry.model_class, entry.processor_class
        transformers.AutoConfig.register(entry.name, config_class, exist_ok=True)
        transformers.AutoModel.register(config_class, entry.auto_model_class, exist_ok=True)
        getattr(transformers, entry.auto_class).register(config_class, model_class, exist_ok=True)
        transformers.AutoProcessor.register(config_class, processor_class, exist_ok=True)
        config_class.register_for_auto_class()
        # Remote code: config.json's auto_map gets AutoModel for the recognition model (FACET-VLM's
        # save_pretrained adds both of its classes itself).
        if entry.auto_model_name:
            entry.auto_model_class.register_for_auto_class("AutoModel")
            model_class.register_for_auto_class(entry.auto_class)
        else:
            model_class.register_for_auto_class("AutoModel")


#: Where a trained model of this machine is looked for when none is named (the Space, `facet_vlm.pipeline` without
#: ``model``, ``scripts/predict.py`` without ``--model``), in this order; ``{name}`` is a registry name
#: (``facet_vlm``, ``couplefer``, ``afnet_m``, ``physio_prompt``). First the synthetic pretraining run's model, then
#: the model of the model's small config (the README's first training command). These are the ``model/`` folders
#: that ``scripts/train.py`` writes into its ``--output_dir``; relative paths are read from the current directory.
LOCAL_MODEL_DIRS: tuple[str, ...] = ("outputs/pretrain_{name}/model", "outputs/{name}_synthetic_small/model")
#: Environment variable that replaces `LOCAL_MODEL_DIRS`: folders separated by ``os.pathsep`` (``:`` on Linux),
#: with the same ``{name}`` placeholder; set it empty to search nothing.
LOCAL_MODELS_ENV = "FACET_VLM_LOCAL_MODELS"


def local_model_dirs(name: str, environ: dict[str, str] | None = None) -> list[Path]:
    """The folders searched for a trained `name` model (`LOCAL_MODEL_DIRS`, or ``$FACET_VLM_LOCAL_MODELS``)."""
    import os

    environ = os.environ if environ is None else environ
    patterns = environ[LOCAL_MODELS_ENV].split(os.pathsep) if LOCAL_MODELS_ENV in environ else LOCAL_MODEL_DIRS
    return [Path(pattern.format(name=name)) for pattern in patterns if pattern.strip()]


def find_local_model(name: str, environ: dict[str, str] | None = None) -> Path | None:
    """The first folder of `local_model_dirs` that holds a saved `name` model (``config.json`` of that
    ``model_type`` and safetensors weights), or None."""
    for folder in local_model_dirs(name, environ):
        config_file = folder / "config.json"
        if not config_file.is_file() or not any(folder.glob("*.safetensors")):
            continue
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            continue
        if model_type == name:
            return folder
    return None


def check_model_files(source: str | PathLike) -> dict[str, Any]:
    """Read a model folder's ``config.json`` and the headers of its ``*.safetensors`` files (not the tensors) so that
    a corrupt or truncated file is reported by name before transformers fails somewhere inside; returns the config."""
    from safetensors import SafetensorError, safe_open

    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        raise ConfigError("no config.json; is this a folder written by save_pretrained?", source)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"not valid JSON ({error}); the file is corrupt", config_file) from error
    if not isinstance(config, dict):
        raise FormatError("must hold a JSON object", config_file)
    for weights in sorted(Path(source).glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise FormatError(f"unreadable weights ({error}); the file is truncated or corrupt", weights) from error
    return config


__all__ = ["LOCAL_MODELS_ENV", "LOCAL_MODEL_DIRS", "MODEL_NAMES", "MODEL_REGISTRY", "ModelEntry", "SCAN_TASK",
           "VIDEO_TASK", "check_model_files", "entry_for_class", "find_local_model", "local_model_dirs",
           "make_processor", "model_entry", "register_auto_classes"]
