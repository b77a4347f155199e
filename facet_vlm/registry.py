"""The one list of the library's models: each described once, read by training, evaluation, the pipelines,
publishing and the Space.

Adding a model = one `ModelEntry` here + its folder with ``configuration_<name>.py``, ``modeling_<name>.py`` and
``processing_<name>.py`` (FACET-VLM in ``facet_vlm/models/facet_vlm/``, the others in ``couple/<name>/``).

An entry names its classes by module and class name and imports them only when asked (`ModelEntry.config_class`,
...), from their own files rather than from a package ``__init__``: listing the registry imports no model.

Auto classes (the same rule for all four models, as in transformers): `AutoModel` loads the *base* model (no class
head: `FacetVLMModel`, `CoupleFERModel`, `AFNetMModel`, `PhysioPromptModel`), the task Auto class
(`AutoModelForImageClassification` for the 3D/4D scan models, `AutoModelForVideoClassification` for the physio
video model) the *recognition* model with its head and training loss. A recognition model's folder loads into either.
`AutoProcessor` loads the model's processor (``processor_config.json``) once `register_processors` has run.

Registration costs nothing at import: ``import facet_vlm`` runs `register_when_imported`, which registers with
transformers' Auto classes the moment transformers' Auto modules are imported (at once if they already are), so
``import facet_vlm`` imports neither transformers nor torch. Registering imports the four configuration files only;
transformers' Auto mappings get a `LazyClass` for each model class, which imports the modeling file the first time
the class is used. `register_processors` (run by the pipelines, training and the Space) registers the
processors with `AutoProcessor`, whose import alone costs more than all the rest of ``import facet_vlm``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import sys
import warnings
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
        folder: the package (folder) that holds the model's ``configuration_<name>``, ``modeling_<name>`` and
            ``processing_<name>`` modules.
        config_name / model_name / base_model_name / processor_name: class names (`model_name` is the recognition
            model, `base_model_name` the model without head that `AutoModel` loads).
        data_kind: ``scan`` (a 3D face; FACET-VLM also takes 4D sequences of scans) or ``video`` (a face clip).
        task: the pipeline task (`SCAN_TASK` or `VIDEO_TASK`).
        auto_class: the task Auto class of transformers that loads the recognition model.
        title: the model's name in cards and the Space.
        temporal: the model takes 4D sequences (T frames); a static scan model gets one frame per sequence (its
            apex frame, `facet_vlm.data.sequences.apex_rows`) on a sequence data set.
    """

    name: str
    folder: str
    config_name: str
    model_name: str
    base_model_name: str
    processor_name: str
    data_kind: DataKind
    task: str
    auto_class: str
    title: str
    temporal: bool = False

    def module(self, kind: str) -> str:
        """The full name of the model's ``configuration``, ``modeling`` or ``processing`` module."""
        return f"{self.folder}.{kind}_{self.name}"

    def _load(self, kind: str, name: str) -> Any:
        return getattr(importlib.import_module(self.module(kind)), name)

    @property
    def config_class(self) -> Any:
        return self._load("configuration", self.config_name)

    @property
    def model_class(self) -> Any:
        return self._load("modeling", self.model_name)

    @property
    def base_model_class(self) -> Any:
        return self._load("modeling", self.base_model_name)

    @property
    def processor_class(self) -> Any:
        return self._load("processing", self.processor_name)

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
        ModelEntry("facet_vlm", "facet_vlm.models.facet_vlm", "FacetVLMConfig", "FacetVLMForExpressionRecognition",
                   "FacetVLMModel", "FacetVLMProcessor", "scan", SCAN_TASK, "AutoModelForImageClassification",
                   "FACET-VLM", temporal=True),
        ModelEntry("couplefer", "couple.couplefer", "CoupleFERConfig", "CoupleFERForExpressionRecognition",
                   "CoupleFERModel", "CoupleFERProcessor", "scan", SCAN_TASK, "AutoModelForImageClassification",
                   "CoupleFER"),
        ModelEntry("afnet_m", "couple.afnet_m", "AFNetMConfig", "AFNetMForExpressionRecognition", "AFNetMModel",
                   "AFNetMProcessor", "scan", SCAN_TASK, "AutoModelForImageClassification", "AFNet-M"),
        ModelEntry("physio_prompt", "couple.physio_prompt", "PhysioPromptConfig",
                   "PhysioPromptForEmotionRecognition", "PhysioPromptModel", "PhysioPromptProcessor", "video",
                   VIDEO_TASK, "AutoModelForVideoClassification", "Physio-facial prompt tuning"),
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
        if class_name in (entry.model_name, entry.base_model_name, entry.config_name, entry.processor_name):
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


class LazyClass:
    """Stands in for a model or processor class in transformers' Auto mappings until it is first used: attribute
    access (``from_pretrained``, ``_from_config``, ...) and calls import the class's module then and go to the class.
    `__name__` and `config_class` (what the Auto classes read when registering and matching names) need no import."""

    def __init__(self, module: str, name: str, config_class: Any):
        self.__name__ = self.__qualname__ = name
        self.__module__ = module
        self.config_class = config_class

    @property
    def resolved(self) -> Any:
        """The class itself (its module imported on first use)."""
        return getattr(importlib.import_module(self.__module__), self.__name__)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.resolved, attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolved(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy class {self.__module__}.{self.__name__}>"


#: transformers' Auto modules: registration with the Auto classes each defines waits for them.
_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODEL_AUTO = "transformers.models.auto.modeling_auto"
#: A configuration of this library imports CLIP's.
_CLIP_CONFIG = "transformers.models.clip.configuration_clip"
#: What is registered so far: ("config" | "model", registry name).
_REGISTERED: set[tuple[str, str]] = set()


def _initializing(name: str) -> bool:
    """Whether module `name` is being imported right now (in sys.modules, its body still running)."""
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _ready(name: str) -> bool:
    return name in sys.modules and not _initializing(name)


#: The modules whose import completing may let `_register_ready` do more (looked up on every import while the hook
#: is installed, so computed once).
_WATCHED = frozenset({_CONFIG_AUTO, _MODEL_AUTO, _CLIP_CONFIG} | {entry.module("configuration") for entry in
                                                                  MODEL_REGISTRY.values()})


def _register_ready() -> bool:
    """Register every model whose registration can run now: a configuration once transformers' `AutoConfig` module
    is imported, a model once its `AutoModel` module is, neither while a module its configuration imports (CLIP's, its
    own) is half imported (the import that is running would see a half-made module). Returns whether all is done."""
    for entry in MODEL_REGISTRY.values():
        if _initializing(_CLIP_CONFIG) or _initializing(entry.module("configuration")):
            continue
        if ("config", entry.name) not in _REGISTERED and _ready(_CONFIG_AUTO):
            from transformers.models.auto.configuration_auto import AutoConfig

            AutoConfig.register(entry.name, entry.config_class, exist_ok=True)
            _REGISTERED.add(("config", entry.name))
        if ("model", entry.name) not in _REGISTERED and _ready(_MODEL_AUTO):
            from transformers.models.auto import modeling_auto

            config_class = entry.config_class
            modeling_auto.AutoModel.register(
                config_class, LazyClass(entry.module("modeling"), entry.base_model_name, config_class), exist_ok=True)
            getattr(modeling_auto, entry.auto_class).register(
                config_class, LazyClass(entry.module("modeling"), entry.model_name, config_class), exist_ok=True)
            _REGISTERED.add(("model", entry.name))
    return len(_REGISTERED) == 2 * len(MODEL_REGISTRY)


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps the loader of a `_WATCHED` module: executes the module, then registers what can be registered."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        # the import machinery marks the module done only after this returns: register as if it were done
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec._initializing = False
        try:
            done = _register_ready()
        except Exception as error:  # never break the import of transformers' own module; say why and retry later
            warnings.warn(f"facet_vlm: registering the models with transformers' Auto classes failed after importing "
                          f"{module.__name__} ({type(error).__name__}: {error}); it is retried at the next import of "
                          "transformers' Auto modules, or call facet_vlm.registry.register_auto_classes()",
                          RuntimeWarning, stacklevel=2)
            return
        if done:
            sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _AutoModuleFinder)]

    def __getattr__(self, attribute: str) -> Any:  # get_filename, get_source, get_resource_reader, ...
        return getattr(self.loader, attribute)


class _AutoModuleFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path`` until every model is registered: finds the `_WATCHED` modules with the other
    finders and hands out their spec with a `_RegisteringLoader`; every other import it leaves alone."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def register_when_imported() -> None:
    """What ``import facet_vlm`` runs: register with transformers' Auto classes without importing transformers.

    Registration needs transformers' Auto modules, whose import costs about 2.5 s here (they import torch). So what
    can be registered is registered at once (transformers' Auto modules already imported), and an import hook
    (`_AutoModuleFinder`) registers the rest right after the modules it needs are imported, by anyone:
    ``transformers.AutoModel`` (or `AutoConfig`, a pipeline, a model class of this library) is ready to load this
    library's models the first time it is touched, and a program that never uses transformers never pays for it.
    Idempotent; `register_auto_classes` registers everything at once instead."""
    if not _register_ready() and not any(isinstance(finder, _AutoModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AutoModuleFinder())


def register_auto_classes() -> None:
    """Register every model with `AutoConfig`, `AutoModel` (its base model) and its task Auto class (its recognition
    model) now, importing transformers' Auto modules (and with them torch) and the configuration files only; the
    model classes are `LazyClass` stand-ins. Idempotent. ``import facet_vlm`` runs `register_when_imported` instead."""
    importlib.import_module(_CONFIG_AUTO)
    importlib.import_module(_MODEL_AUTO)
    _register_ready()


def register_processors() -> None:
    """Register every model's processor with `AutoProcessor` (as a `LazyClass`). Idempotent."""
    from transformers import AutoProcessor

    for entry in MODEL_REGISTRY.values():
        config_class = entry.config_class
        AutoProcessor.register(config_class, LazyClass(entry.module("processing"), entry.processor_name, config_class),
                               exist_ok=True)


#: Where a trained model of this machine is looked for when none is named (the Space, `facet_vlm.pipeline` without
#: ``model``, ``scripts/predict.py`` without ``--model``), in this order; ``{name}`` is a registry name
#: (``facet_vlm``, ``couplefer``, ``afnet_m``, ``physio_prompt``). First the synthetic pretraining run's model, then
#: the README's main job (``<name>_calibrated_small``), then a small synthetic config's run. These are the
#: ``model/`` folders that ``scripts/train.py`` writes into its ``--output_dir``; relative paths are read from the
#: current directory.
LOCAL_MODEL_DIRS: tuple[str, ...] = ("outputs/pretrain_{name}/model", "outputs/{name}_calibrated_small/model",
                                     "outputs/{name}_synthetic_small/model")
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


__all__ = ["LOCAL_MODELS_ENV", "LOCAL_MODEL_DIRS", "LazyClass", "MODEL_NAMES", "MODEL_REGISTRY", "ModelEntry",
           "SCAN_TASK", "VIDEO_TASK", "check_model_files", "entry_for_class", "find_local_model", "local_model_dirs",
           "make_processor", "model_entry", "register_auto_classes", "register_processors"]
