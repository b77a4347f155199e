#!/usr/bin/env bash
# CI, second part: the package installed NON-editably in a fresh venv, used from outside the repository as a user
# would: a tiny model folder and data are made with the installed package, then scripts/predict.py (a scan, and a
# face video with a pulse plot), scripts/publish.py (a local folder: needs the card template as package data) and
# transformers.pipeline(..., trust_remote_code=True) run from a scratch directory.
# Usage: .ci/installed_smoke.sh PYTHON   (the python of the fresh venv)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="$1"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 GRADIO_ANALYTICS_ENABLED=False
unset PYTHONPATH

"$PYTHON" - <<'EOF'
import pathlib

import torch

import facet_vlm
from couple import PhysioPromptConfig, PhysioPromptForEmotionRecognition, PhysioPromptProcessor
from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition, FacetVLMProcessor
from facet_vlm.data.synthetic import generate
from facet_vlm.data.synthetic_video import generate_videos

assert "site-packages" in facet_vlm.__file__, f"not the installed package: {facet_vlm.__file__}"
torch.manual_seed(0)
tower = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
config = FacetVLMConfig(vision_config={**tower, "image_size": 32, "patch_size": 8}, text_config=tower,
                        projection_dim=32, cvsa_heads=2, mtgf_heads=2)
FacetVLMForExpressionRecognition(config).save_pretrained("model")
FacetVLMProcessor.from_config(config).save_pretrained("model")
physio = PhysioPromptConfig(vision_config={**tower, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                            num_prompts=2, adapter_bottleneck=8, pulse_hidden_size=16, pulse_conv_channels=4)
PhysioPromptForEmotionRecognition(physio).save_pretrained("physio")
PhysioPromptProcessor.from_config(physio, num_frames=4, tfr_size=[32, 32]).save_pretrained("physio")
generate("scans", subjects=1, seed=0, intensities=1, include_neutral=False, vertices=1500, texture_size=64,
         progress=False)
generate_videos("videos", subjects=1, trials_per_subject=1, seconds=3.0, size=32, seed=0)
pathlib.Path("scan.txt").write_text(str(sorted(pathlib.Path("scans").rglob("*_F3D.wrl"))[0]))
video = sorted(p for p in pathlib.Path("videos").rglob("*") if p.suffix in (".avi", ".mp4"))[0]
pathlib.Path("video.txt").write_text(str(video))
EOF

"$PYTHON" "$REPO/scripts/predict.py" --model model --json "$(cat scan.txt)"
"$PYTHON" "$REPO/scripts/predict.py" --model physio "$(cat video.txt)" --pulse_plot pulse.png
test -s pulse.png
"$PYTHON" "$REPO/scripts/publish.py" model --repo-id facet-vlm-ci/tiny --out hub_folder
test -s hub_folder/README.md

"$PYTHON" - <<'EOF'
import pathlib

import transformers

import facet_vlm

facet_vlm.register_pipelines()  # `import facet_vlm` registers the models; the pipeline tasks are registered on demand
classify = transformers.pipeline("expression-recognition", model="hub_folder", trust_remote_code=True)
rows = classify(pathlib.Path("scan.txt").read_text())
assert abs(sum(row["score"] for row in rows) - 1.0) < 1e-4, rows
print("transformers.pipeline on the published folder:", rows[0])
EOF
echo "installed-package smoke test passed ($WORK)"
