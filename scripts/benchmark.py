"""Run the comparison / ablation / robustness / cross-dataset report (`facet_vlm.benchmark`).

    python scripts/benchmark.py --config facet_vlm/configs/benchmark_small.json [--output_dir DIR]
"""

import argparse

from facet_vlm.benchmark import run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="benchmark config (JSON)")
    parser.add_argument("--output_dir", default=None, help="overrides the config's output_dir")
    args = parser.parse_args()
    run_benchmark(args.config, args.output_dir)


if __name__ == "__main__":
    main()
