"""The floors in pyproject.toml hold: the symbols the code relies on exist in the installed versions, and the
installed versions are not below the floors (so a test run on the floors would fail here first if they were wrong).

transformers' floor (5.21) was found by reading the released wheels and running the tests on them: 5.19.0's
`configuration_utils.py` has no `sub_configs_defaults`; 5.20.x has it but needs a `SubConfigSpec` per entry, which
5.21.0 makes from a bare config class (as the composite configs write them); `transformers.initialization` exists in
5.x (4.57 lacks it). `.ci/lowest_versions.sh` runs this file with every dependency at its floor.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def floors() -> dict[str, Version]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    found = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        for spec in requirement.specifier:
            if spec.operator == ">=":
                found[requirement.name.lower()] = Version(spec.version)
    return found


@pytest.mark.parametrize("name", sorted(floors()))
def test_installed_versions_meet_the_floors(name):
    installed = Version(re.sub(r"\+.*", "", metadata.version(name)))
    assert installed >= floors()[name]


def test_transformers_has_what_the_models_and_the_run_layer_use():
    import transformers
    from transformers import PreTrainedConfig, ProcessorMixin
    from transformers import initialization as init
    from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

    assert floors()["transformers"] >= Version("5.21")
    assert "sub_configs_defaults" in PreTrainedConfig.__dict__ and hasattr(init, "normal_")
    assert "type" in inspect.signature(PIPELINE_REGISTRY.register_pipeline).parameters
    assert hasattr(Pipeline, "_load_processor") and hasattr(ProcessorMixin, "get_attributes")
    for name in ("AutoModelForImageClassification", "AutoModelForVideoClassification", "AutoProcessor",
                 "BatchFeature", "HfArgumentParser"):
        assert hasattr(transformers, name), name


def test_peft_and_pyedflib_have_what_the_code_uses():
    import pyedflib
    from peft import LoraConfig, PeftModel
    from peft.utils.constants import DUMMY_TARGET_MODULES

    assert {"modules_to_save", "target_modules"} <= set(inspect.signature(LoraConfig).parameters)
    assert DUMMY_TARGET_MODULES == "dummy-target-modules" and hasattr(PeftModel, "from_pretrained")
    assert hasattr(pyedflib.EdfWriter, "setDatarecordDuration") and hasattr(pyedflib, "FILETYPE_BDF")


def test_the_card_template_is_package_data():
    from facet_vlm.hub import DEFAULT_TEMPLATE

    project = tomllib.loads(PYPROJECT.read_text())
    assert DEFAULT_TEMPLATE.is_file() and DEFAULT_TEMPLATE.parent.parent.name == "facet_vlm"
    assert "templates/*.md" in project["tool"]["setuptools"]["package-data"]["facet_vlm"]
    assert project["project"]["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
