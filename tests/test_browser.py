"""Headless Chromium loads the running Space: the DOM (rendered by Gradio's JavaScript) holds every component's
label, and a screenshot shows the UI.

Skipped only when /usr/bin/chromium is absent (CI installs it with ``apt-get install -y chromium``).
"""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1280, 1400)
#: Labels of the app's components and of its button and model choice: each must be a rendered text node.
UI_LABELS = ("Scan files", "Example face", "Model", "Recognise expression", "Expression probabilities", "3D scan",
             "Rendered views", "FACET-VLM (random, offline demo)")
#: Phrases of the offline notice (inside longer markdown text).
UI_PHRASES = ("Offline demo:", "randomly initialised")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed "
                                "(apt-get install -y chromium)")


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on `url` with no background network traffic; JS gets 15 s of virtual time."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


class VisibleText(HTMLParser):
    """Text nodes of a DOM outside <script>/<style> (Gradio also embeds its config as JSON in a script, which
    must not count: only what its JavaScript rendered into elements)."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("script", "style") and self._hidden > 0

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.parts.append(" ".join(data.split()))


def test_dom_dump_has_component_labels(space_url, tmp_path):  # noqa: F811
    completed = chromium(space_url, tmp_path / "profile", "--dump-dom")
    assert completed.returncode == 0, completed.stderr[-2000:]
    parser = VisibleText()
    parser.feed(completed.stdout)
    text = " ".join(parser.parts)
    missing = [label for label in UI_LABELS if label not in parser.parts]
    missing += [phrase for phrase in UI_PHRASES if phrase not in text]
    assert not missing, f"missing from the rendered DOM: {missing}"


def test_screenshot_shows_the_ui(space_url, tmp_path):  # noqa: F811
    from PIL import Image

    shot = tmp_path / "space.png"
    completed = chromium(space_url, tmp_path / "profile", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                         f"--screenshot={shot}")
    assert completed.returncode == 0 and shot.is_file(), completed.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    # A rendered page has text, borders and the orange primary button: many distinct colours, not a blank canvas.
    colours = np.unique(image.reshape(-1, 3) // 16, axis=0)
    assert len(colours) > 20
    red, green, blue = (image[..., channel].astype(int) for channel in range(3))
    assert np.count_nonzero((red > 200) & (green < 160) & (blue < 80)) > 1000, "primary button not visible"
