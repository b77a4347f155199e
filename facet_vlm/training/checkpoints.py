"""Checkpoints of a fold and the identity of a run: `save_checkpoint` / `load_checkpoint` (Accelerate's state plus the
loop's own), the resume rules, and `run_fingerprint` (every result-defining argument and the code version), which
decides whether a finished fold may be reused."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..arguments import DataArguments, LoopArguments, ModelArguments
from ..errors import ConfigError, FormatError
from ..evaluation import (
    write_json,
)

logger = logging.getLogger(__name__)



TRAINER_STATE = "trainer_state.json"


TRAINER_STATE = "trainer_state.json"
#: The run-defining arguments (`run_arguments`) saved with every checkpoint and compared on resume.
CHECKPOINT_ARGUMENTS = "run_arguments.json"


# ----------------------------------------------------------------------------------------------------- loop pieces
def checkpoint_dirs(fold_dir: Path) -> list[Path]:
    """A fold's checkpoints, oldest first (folders ``checkpoints/step_<N>`` with a finished trainer state)."""
    root = fold_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [path for path in root.glob("step_*") if (path / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda path: int(path.name.split("_")[1]))



def save_checkpoint(accelerator: Any, fold_dir: Path, state: dict[str, Any], limit: int,
                    arguments: dict[str, Any] | None = None) -> Path:
    """`accelerator.save_state` + the loop's own state (and the run-defining `arguments`, compared on resume); keeps
    the newest `limit` checkpoints.

    The trainer state file is written last, so a checkpoint interrupted half-way is never picked up as 'latest'.
    """
    path = fold_dir / "checkpoints" / f"step_{state['completed_steps']:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        if arguments:
            write_json(path / CHECKPOINT_ARGUMENTS, arguments)
        write_json(path / TRAINER_STATE, state)
        for old in checkpoint_dirs(fold_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path



def load_checkpoint(accelerator: Any, checkpoint: Path) -> None:
    """`accelerator.load_state`, with a truncated file or a model that no longer fits the checkpoint (architecture
    or ``--model_config`` changed) reported as a `FacetVLMError` naming the file."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(checkpoint.iterdir()):
        # torch.save writes zip archives; a truncated one has lost its central directory at the end.
        if file.suffix in (".bin", ".pkl", ".pt") and not zipfile.is_zipfile(file):
            raise FormatError("truncated or corrupt (not a complete torch archive); resume from another checkpoint",
                              file)
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except (SafetensorError, OSError) as error:
                raise FormatError(f"truncated or corrupt weights ({error})", file) from error
    try:
        accelerator.load_state(str(checkpoint))
    except (RuntimeError, ValueError, KeyError) as error:
        message = " ".join(line.strip() for line in str(error).strip().splitlines()[:4])
        if "state_dict" in message:
            weights = sorted(checkpoint.glob("model*.safetensors")) or sorted(checkpoint.glob("pytorch_model*.bin"))
            file = weights[0] if weights else checkpoint
        elif "group" in message or "optimizer" in message:
            file = checkpoint / "optimizer.bin"
        else:
            file = checkpoint
        raise ConfigError(f"does not fit the model being trained (architecture or --model_config changed?): "
                          f"{message}", file) from error



def resume_path(resume: str | None, fold_dir: Path) -> Path | None:
    """The checkpoint to resume a fold from: ``latest`` (None when the fold has none yet) or a given folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoint_dirs(fold_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise ConfigError(f"not a checkpoint of scripts/train.py (no {TRAINER_STATE})", path)
    if path.resolve().parent.parent != fold_dir.resolve():
        return None  # a checkpoint of another fold: this fold starts fresh.
    return path



def check_resume_arguments(checkpoint: Path, arguments: dict[str, Any], allow_changed: bool) -> None:
    """Refuse to resume `checkpoint` with run-defining arguments other than the ones it was saved with (a changed
    learning rate or seed would silently make a run that neither configuration describes), unless
    ``--allow_changed_args``. Checkpoints written before the arguments were saved are resumed with a warning."""
    stored_file = checkpoint / CHECKPOINT_ARGUMENTS
    if not stored_file.is_file():
        logger.warning("%s: no %s, cannot check that the arguments match", checkpoint, CHECKPOINT_ARGUMENTS)
        return
    try:
        stored = json.loads(stored_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"not valid JSON ({error})", stored_file) from error
    changed = [f"{key} {stored.get(key)!r} -> {arguments.get(key)!r}" for key in sorted(set(stored) | set(arguments))
               if stored.get(key) != arguments.get(key)]
    if not changed:
        return
    if allow_changed:
        logger.warning("resuming %s with changed arguments (--allow_changed_args): %s", checkpoint, "; ".join(changed))
        return
    raise ConfigError(f"the checkpoint was saved with other run-defining arguments (checkpoint -> now): "
                      f"{'; '.join(changed)}; resume with the same arguments, or pass --allow_changed_args",
                      stored_file)



def check_resumable(output_dir: Path, fold_ids: Sequence[int], arguments: dict[str, Any],
                    loop_args: LoopArguments) -> None:
    """`check_resume_arguments` for every fold a ``--resume_from_checkpoint`` run would resume, before the run
    overwrites ``run_config.json`` (each fold checks again when it loads its checkpoint)."""
    if loop_args.resume_from_checkpoint is None:
        return
    for name in [f"fold_{index}" for index in fold_ids] + ["all_data"]:
        resume = resume_path(loop_args.resume_from_checkpoint, output_dir / name)
        if resume is not None:
            check_resume_arguments(resume, arguments, loop_args.allow_changed_args)



def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers (names, shapes and bytes), to compare runs and ranks."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()



#: Arguments that do not change a fold's result: left out of `run_arguments` (the fingerprint, the resume check).
NON_DEFINING_ARGUMENTS = frozenset({
    "output_dir", "fold", "max_folds", "num_proc", "cache_dir", "resume_from_checkpoint", "stop_after_steps",
    "report_to", "logging_steps", "checkpointing_steps", "checkpoints_total_limit", "keep_checkpoints",
    "dataloader_num_workers", "final_model", "save_adapters_only", "allow_changed_args",
    # speed and memory only: the same result within floating-point tolerance (tests/test_attention.py)
    "num_threads", "torch_compile", "attn_implementation", "gradient_checkpointing"})



def run_arguments(model_args: ModelArguments, data_args: DataArguments, loop_args: LoopArguments) -> dict[str, Any]:
    """Every argument that changes a fold's result (as JSON values): saved with checkpoints, hashed by
    `run_fingerprint`."""
    values = {key: value for argument in (model_args, data_args, loop_args)
              for key, value in asdict(argument).items() if key not in NON_DEFINING_ARGUMENTS}
    return json.loads(json.dumps(values, sort_keys=True, default=str))



@lru_cache(maxsize=1)
def code_version() -> str:
    """The version of the code that makes a result: the package version and a hash of the source of every module of
    ``facet_vlm`` and ``couple`` (file names and bytes), so that any change of the code, installed or not, gives
    another version. Computed once per process (about 150 files)."""
    import couple
    import facet_vlm

    digest = hashlib.sha256(facet_vlm.__version__.encode())
    for package in (facet_vlm, couple):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return f"{facet_vlm.__version__}+{digest.hexdigest()[:12]}"


def run_fingerprint(model_args: ModelArguments, data_args: DataArguments, loop_args: LoopArguments) -> str:
    """A hash of every argument that changes a fold's result and of the `code_version`: a finished fold is reused
    only when both match, so a result made by older code is never reused silently."""
    values = {"arguments": run_arguments(model_args, data_args, loop_args), "code_version": code_version()}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
