"""What a user and the ComfyUI registry read first: the LICENSE, pyproject's metadata and the
registry's [tool.comfy] fields, and a package list that ships every package of the tree."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def test_license_file_matches_pyproject() -> None:
    assert PROJECT["license"] == "MIT"  # an SPDX expression (PEP 639)
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} \S", text, re.M)
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    # setuptools refuses a "License ::" classifier next to an SPDX expression
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


def test_classifiers_and_keywords() -> None:
    classifiers = PROJECT["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    low = PROJECT["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {low}" in classifiers
    assert any(c.startswith("Topic :: ") for c in classifiers)
    # the registry keeps only the accelerators it knows (comfy-cli's config parser)
    known = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend", "GPU :: Apple Metal"}
    assert all(c.removeprefix("Environment :: ") in known for c in classifiers if c.startswith("Environment :: "))
    assert {"comfyui", "lora"} <= set(PROJECT["keywords"])


def test_comfy_registry_fields() -> None:
    comfy = PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"] == "LoRA Studio"
    icon = comfy["Icon"]
    assert icon.startswith("https://") and icon.endswith("/web/icon.svg")
    assert (ROOT / "web" / "icon.svg").is_file()  # the icon the URL names is in the repository
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    # the registry's node id: letters, digits, -_. ; no "comfyui" in it
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,98}", PROJECT["name"]) and "comfyui" not in PROJECT["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", PROJECT["version"])
    urls = PROJECT["urls"]
    for key in ("Repository", "Documentation", "Bug Tracker", "Issues"):
        assert urls[key].startswith(urls["Repository"]), key


def test_requirements_never_install_torch() -> None:
    """ComfyUI's torch must never be replaced; the extras never list it either (README, 'torch')."""
    reqs = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    names = [re.split(r"[<>=\[ ;]", r.strip(), maxsplit=1)[0].lower() for r in reqs if r.strip() and not r.startswith("#")]
    assert names and "torch" not in names
    for extra, deps in PROJECT["optional-dependencies"].items():
        assert not [d for d in deps if re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower() in ("torch", "torchvision")], extra


def test_every_package_of_the_tree_is_shipped() -> None:
    """A non-editable install (pip install ., the registry's archive) ships only the listed packages."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    skip = {"tests", "benchmarks", "tools", "web", "docs", "build", "dist"}
    found = {"lora_studio"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT).parts
        if rel and (rel[0] in skip or any(p.startswith(".") or p.endswith(".egg-info") or p == "__pycache__" for p in rel)):
            continue
        found.add(".".join(("lora_studio", *rel)))
    assert found <= listed, f"packages missing from [tool.setuptools] packages: {sorted(found - listed)}"
