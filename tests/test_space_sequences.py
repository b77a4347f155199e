"""The Space's 4D path (hub/space/app.py, offline mode): a sequence .zip through /analyze_sequence and /predict."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

FRAMES = 3


@pytest.fixture(scope="module")
def sequence_zip(tmp_path_factory) -> Path:
    """One generated BU-4DFE sequence (3 numbered .wrl frames with their .bmp textures) zipped in its folder."""
    from facet_vlm.data.synthetic import generate

    out = tmp_path_factory.mktemp("bu4dfe")
    generate(out, subjects=1, seed=1, formats=("bu4dfe",), sequence_frames=FRAMES, vertices=1500, texture_size=64,
             progress=False)
    folder = next((out / "bu4dfe").glob("*/Happy"))
    bundle = out / "happy.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, arcname=f"Happy/{path.name}")
    return bundle


@pytest.fixture(scope="module")
def client(space_url):
    from gradio_client import Client

    return Client(space_url, verbose=False)


def test_a_sequence_zip_gives_a_frame_strip_per_frame_plot_and_prediction(client, sequence_zip):
    from gradio_client import handle_file

    from facet_vlm.data.sequences import select_frame_indices
    from facet_vlm.labels import BASIC_EXPRESSIONS

    strip, label, plot, summary = client.predict(handle_file(str(sequence_zip)), None,
                                                 api_name="/analyze_sequence")
    # The offline FACET-VLM samples 8 frames; a 3-frame clip repeats frames (uniform, short_policy "repeat").
    assert [item["caption"] for item in strip] == [f"{i:03d}.wrl" for i in select_frame_indices(FRAMES, 8)]
    assert len(strip) == 8 and {item["caption"] for item in strip} == {"000.wrl", "001.wrl", "002.wrl"}
    assert all(Path(item["image"]).is_file() for item in strip)
    scores = {row["label"]: row["confidence"] for row in label["confidences"]}
    assert set(scores) == set(BASIC_EXPRESSIONS) and sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert plot is not None and "3 frames" in summary and label["label"] in summary

    predicted = client.predict(handle_file(str(sequence_zip)), api_name="/predict")
    assert {row["label"]: row["confidence"] for row in predicted["confidences"]} == pytest.approx(scores, abs=1e-5)


def test_a_sequence_with_an_empty_frame_is_refused_with_its_name(client, sequence_zip, tmp_path):
    from gradio_client import handle_file

    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(sequence_zip) as source, zipfile.ZipFile(broken, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"" if name.endswith("001.wrl") else source.read(name))
    with pytest.raises(Exception, match="001.wrl"):
        client.predict(handle_file(str(broken)), None, api_name="/analyze_sequence")
