"""Print the expression and class probabilities of raw 3D scans (.wrl, .bnt, .obj, .ply, ...) with a saved model.

    python scripts/predict.py --model outputs/run/model F0001_HA04WH_F3D.wrl bs000_E_HAPPY_0.bnt
    python scripts/predict.py --model outputs/run/model --json scans/*.wrl
"""

import argparse
import json

from facet_vlm.pipelines import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A model folder (scripts/train.py's model/) or a Hub id.")
    parser.add_argument("paths", nargs="+", help="Scans in any format facet_vlm.io.read_face reads.")
    parser.add_argument("--top_k", type=int, default=None, help="Print only the K most likely classes.")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="One JSON object per scan instead of a table.")
    args = parser.parse_args()

    classifier = pipeline("expression-recognition", model=args.model, batch_size=args.batch_size)
    for path, scores in zip(args.paths, classifier(args.paths, top_k=args.top_k)):
        if args.json:
            print(json.dumps({"path": path, "expression": scores[0]["label"], "scores": scores}))
            continue
        print(f"{path}: {scores[0]['label']}")
        for entry in scores:
            print(f"    {entry['label']:<14} {entry['score']:.3f}")


if __name__ == "__main__":
    main()
