#!/usr/bin/env bash
# CI: the dependency floors of pyproject.toml, installed and used. Every direct dependency (core and all extras) is
# pinned at exactly its floor (`NAME==FLOOR` from its `>=`), except torch, which is pinned with torchvision at the
# pair that lies on the CI machine's disk (2.14.1 / 0.29.1; any other torch is a download of GBs). The package is
# installed non-editably from a copy of the tracked files into a fresh venv, then the smoke subset below, ruff and
# lint-imports run with the floors (pytest, ruff and import-linter come from the test extra at their floors too).
#
# Usage: .ci/lowest_versions.sh [PYTHON [WORKDIR]]   (PYTHON makes the venv; default python3, a temporary WORKDIR)
# Writes WORKDIR/floors.txt (the constraints) and WORKDIR/venv, and prints the installed floors.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${1:-python3}"
WORK="${2:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PIP_DISABLE_PIP_VERSION_CHECK=1 OMP_NUM_THREADS=1
unset PYTHONPATH
TORCH=(torch==2.14.1 torchvision==0.29.1)

# The smoke subset (149 tests; 33 s to 132 s here, one thread per test, 2 cores shared with other jobs): every module
# imports and the dependency symbols; config and model save/load of all four models through the auto classes, their
# processors, a LoRA adapter through peft and the remote code; the metrics; the open_clip conversion; the scan and video
# pipelines; one tiny training run through the train entry point (accelerate, the datasets cache, a checkpoint); the
# MAHNOB reader (pyedflib); the model card (huggingface_hub); the Space's card and one call to the app (gradio).
SMOKE=(
  tests/test_imports.py
  tests/test_dependencies.py
  tests/test_models_common.py
  tests/test_metrics.py
  tests/test_facet_vlm.py::test_open_clip_conversion_matches_open_clip
  tests/test_pipelines.py::test_transformers_pipeline_loads_a_scan_model_folder
  tests/test_pipelines.py::test_video_pipeline_reports_emotion_heart_rate_and_pulse
  "tests/test_train.py::test_two_step_run_writes_results_and_a_loadable_model[facet_vlm]"
  tests/test_physio_data.py::test_load_mahnob_reads_the_generated_layout
  tests/test_publish.py::test_card_metadata_has_model_index_from_results
  tests/test_space.py::test_space_readme_front_matter
  tests/test_space.py::test_predict_zip_returns_probabilities
)

mkdir -p "$WORK/src"
git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$WORK/src")

"$PYTHON" - "$REPO/pyproject.toml" "${TORCH[@]}" >"$WORK/floors.txt" <<'EOF'
"""NAME==FLOOR for every direct dependency; torch and torchvision at the versions given on the command line."""
import re
import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
pinned = dict(arg.split("==") for arg in sys.argv[2:])
floors = {}
for line in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)(\s*,\s*<\s*[0-9][0-9A-Za-z.]*)?", line)
    if not match:
        sys.exit(f"pyproject.toml: {line!r} is not NAME>=FLOOR or NAME>=FLOOR,<CAP")
    name = re.sub(r"[-_.]+", "-", match[1]).lower()
    if floors.setdefault(name, match[2]) != match[2]:
        sys.exit(f"pyproject.toml: {name} has two floors, {floors[name]} and {match[2]}")
floors.update(pinned)
print("\n".join(f"{name}=={version}" for name, version in sorted(floors.items())))
EOF

"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv/bin"
"$VENV/pip" install -q "${TORCH[@]}"
"$VENV/pip" install -q -c "$WORK/floors.txt" "$WORK/src[demo,report,test]"

# Every pin took: pip check (no broken requirement) and each direct dependency installed at its floor.
"$VENV/pip" check
"$VENV/python" - "$WORK/floors.txt" <<'EOF'
import sys
from importlib.metadata import version

from packaging.version import Version

wrong = []
for line in open(sys.argv[1]).read().split():
    name, floor = line.split("==")
    if Version(version(name).split("+")[0]) != Version(floor):
        wrong.append(f"{name} {version(name)} (floor {floor})")
if wrong:
    sys.exit("not installed at the floor: " + ", ".join(wrong))
print("installed at the floors:", open(sys.argv[1]).read().replace("\n", " "))
EOF
echo "[lowest versions] installed after ${SECONDS}s"

cd "$WORK/src"
# (test_imports.py without its two one_import tests: each starts a fresh interpreter, 30 s apiece here; the auto
# classes are covered by test_models_common.py.)
"$VENV/pytest" -q -p no:cacheprovider -k "not one_import" "${SMOKE[@]}"
"$VENV/ruff" check --no-cache .
"$VENV/lint-imports" --no-cache
echo "[lowest versions] smoke, ruff and lint-imports passed after ${SECONDS}s"
