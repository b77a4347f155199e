"""Training and subject-independent evaluation of every model of the library with Hugging Face Accelerate.

`main(argv)` is what ``scripts/train.py`` and the ``facet-vlm-train`` console script run::

    accelerate launch scripts/train.py --config facet_vlm/configs/facet_vlm_synthetic_small.json
    OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py --model couplefer ...

The run reads top to bottom, one module per stage:
arguments (`facet_vlm.arguments`) → data-set index and cached model inputs (`facet_vlm.data.prepare`) → folds
(`facet_vlm.data.folds`) → per fold: the model (`training.build`: `facet_vlm.registry`, optionally LoRA through
PEFT) → the loop (`training.loop`: `accelerator.prepare`, epochs of gradient-accumulated, mixed-precision steps with
`save_state` checkpoints from `training.checkpoints`) → scoring (`facet_vlm.evaluation.evaluate_model`,
`gather_for_metrics`) → ``fold_<i>/results.json`` written the moment the fold ends (`training.runner`). A rerun reuses
a finished fold only when its fingerprint (every result-defining argument and the code version,
`training.checkpoints.run_fingerprint`) matches. At the end: ``all_results.json`` (mean ± std and per-fold metrics),
``results.txt`` (the table), ``confusion_matrix.png`` (summed over folds), ``curves.png`` (loss and test accuracy per
epoch) and the final model with its processor in ``model/`` (the model of the last fold run, or one retrained on every
subject with ``--final_model all_data``; ``--final_model every_fold`` also saves each fold's model in
``fold_<i>/model``). With ``--peft lora --save_adapters_only`` ``model/`` is a PEFT adapter
folder whose ``base_model_name_or_path`` is ``--init_from`` or the untrained base model saved in ``base_model/``.
``all_results.json`` also holds ``pooled``: UF1, UAR and accuracy of the predictions pooled over the folds run (the
micro-expression convention of 4DME under ``--protocol loso``; `facet_vlm.evaluation.pooled_metrics`).
Sequence data sets (``--dataset bu4dfe:ROOT | bp4d:ROOT | 4dme:ROOT``) are prepared by
`facet_vlm.data.prepare.prepare_sequences`; BP4D as a cross-dataset test set is scored with
``scripts/evaluate_model.py MODEL --dataset bp4d:ROOT`` (`facet_vlm.evaluation.evaluate_saved_model`).

Reproducibility: every fold starts from ``set_seed(seed)``, batches are drawn by a seedable sampler
(order = f(seed, epoch)), and ``--batch_size`` is the global batch split across processes (``split_batches``), so
one process and two processes see the same batches; training drops the last incomplete batch so that every
process gets an equal share. A resumed run restores model, optimizer, scheduler, RNG and the running epoch loss,
and skips the batches already done with `accelerator.skip_first_batches`; it ends where an uninterrupted run ends.
No model selection happens on the test fold: the per-epoch test accuracy is only plotted, the reported model is the
one after the last epoch.
"""

from .build import (
    PRETRAINED_TOWERS,
    adapt_label_set,
    apply_lora,
    build_base_model,
    build_model,
    class_names,
    lora_config,
    modules_outside_towers,
)
from .checkpoints import (
    CHECKPOINT_ARGUMENTS,
    NON_DEFINING_ARGUMENTS,
    TRAINER_STATE,
    check_resumable,
    check_resume_arguments,
    checkpoint_dirs,
    code_version,
    load_checkpoint,
    run_arguments,
    run_fingerprint,
    save_checkpoint,
    weights_digest,
)
from .loop import FoldOutcome, FoldRun, make_optimizer, train_fold
from .runner import BASE_MODEL_DIR, RunContext, main, make_accelerator, run, save_base_model, save_final_model

__all__ = [
    "BASE_MODEL_DIR",
    "CHECKPOINT_ARGUMENTS",
    "FoldOutcome",
    "FoldRun",
    "NON_DEFINING_ARGUMENTS",
    "PRETRAINED_TOWERS",
    "RunContext",
    "TRAINER_STATE",
    "adapt_label_set",
    "apply_lora",
    "build_base_model",
    "build_model",
    "check_resumable",
    "check_resume_arguments",
    "checkpoint_dirs",
    "class_names",
    "code_version",
    "load_checkpoint",
    "lora_config",
    "main",
    "make_accelerator",
    "make_optimizer",
    "modules_outside_towers",
    "run",
    "run_arguments",
    "run_fingerprint",
    "save_base_model",
    "save_checkpoint",
    "save_final_model",
    "train_fold",
    "weights_digest",
]
