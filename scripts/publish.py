"""Build a Hub-ready folder from a trained run and optionally push it (`facet_vlm.cli.publish_main`; installed as
``facet-vlm-publish``).

    python scripts/publish.py runs/exp1/model --repo-id ORG/NAME [--out DIR] [--push]
"""

import sys

from facet_vlm.cli import publish_main

if __name__ == "__main__":
    sys.exit(publish_main())
