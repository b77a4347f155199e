"""Fixtures of every test module: one thread per test, and the tiny synthetic data and the Space that several
modules share (a module-scoped fixture is created once per test module that uses it)."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """3 subjects x 6 expressions at one intensity, small meshes and textures (BU-3DFE layout)."""
    from facet_vlm.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, subjects=3, seed=0, formats=("bu3dfe",), intensities=1, include_neutral=False, vertices=1500,
             texture_size=64, progress=False)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def space_uploads(tmp_path_factory) -> Path:
    """The upload folder (``GRADIO_TEMP_DIR``) of the session's Space."""
    return tmp_path_factory.mktemp("gradio_uploads")


@pytest.fixture(scope="session")
def space_url(tmp_path_factory, space_uploads):
    """The one Space of the test session, in offline mode (no model configured: a tiny random FACET-VLM), with its
    uploads in `space_uploads`. Tests that need another configuration start their own (marked slow)."""
    from helpers import running_space

    with running_space(tmp_path_factory.mktemp("space") / "space.log", GRADIO_TEMP_DIR=str(space_uploads)) as url:
        yield url
