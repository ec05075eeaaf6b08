"""What the core needs in Slicer's Python, what is missing, and how to install it safely.

torch comes from the PyTorch extension (``PyTorchUtils``), which picks the CUDA build that matches
the driver; everything else comes from pip. Packages that Slicer itself ships (numpy, SimpleITK,
requests, ...) are never replaced: the pip command pins them to the installed version, so pip either
keeps them or fails with a clear conflict instead of silently upgrading them.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

#: torch requirement (passed to PyTorchUtils, which installs the build matching the GPU driver).
TORCH_REQUIREMENT = "torch>=2.1"

#: Installed with torch by the PyTorch extension: pinned like torch, so pip never swaps the build.
TORCH_PACKAGES: Tuple[str, ...] = ("torch", "torchvision", "torchaudio")

#: The core's other requirements; kept equal to pyproject.toml (a test checks it).
CORE_REQUIREMENTS: Tuple[str, ...] = (
    "monai>=1.5",
    "SimpleITK>=2.2",
    "safetensors>=0.4",
    "tqdm>=4.60",
    "numpy>=1.22",
    "scipy>=1.9",
    "nibabel>=4",
    "einops>=0.6",
)

#: Distributions that Slicer bundles with its Python (SuperBuild/External_python-*.cmake): pip must
#: not replace them, since Slicer's own modules are built and tested against these versions.
SLICER_SHIPPED: Tuple[str, ...] = (
    "numpy",
    "scipy",
    "SimpleITK",
    "requests",
    "urllib3",
    "certifi",
    "idna",
    "charset-normalizer",
    "packaging",
    "pillow",
    "pydicom",
    "six",
    "pip",
    "setuptools",
    "wheel",
)


def canonical_name(name: str) -> str:
    """PEP 503 name: ``"SimpleITK"`` and ``"simpleitk"``, ``"charset_normalizer"`` and ``"charset-normalizer"`` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(requirement: str) -> Tuple[str, str]:
    """``"monai>=1.5"`` -> ``("monai", ">=1.5")`` (PEP 508, through ``packaging``, which Slicer ships)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise ValueError(f"Cannot parse requirement {requirement!r}: {exc}") from None
    return parsed.name, str(parsed.specifier)


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a specifier like ``">=1.4"`` or ``">=2.1,<3"``.

    Local build tags count as the release (``2.5.1+cu121`` satisfies ``>=2.1``), and so do
    pre-releases that are already installed.
    """
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(specifier).contains(version, prereleases=True)


def installed_version(name: str) -> Optional[str]:
    """The installed version of a distribution in this Python, or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_problem(version_of: Callable[[str], Optional[str]] = installed_version) -> Optional[str]:
    """None when the installed torch meets :data:`TORCH_REQUIREMENT`; otherwise what is wrong
    (``"missing"`` or ``"2.0.1 installed"``). Reads package metadata only: torch is not imported."""
    name, specifier = split_requirement(TORCH_REQUIREMENT)
    version = version_of(name)
    if version is None:
        return "missing"
    if specifier and not satisfies(version, specifier):
        return f"{version} installed"
    return None


def missing_requirements(
    requirements: Iterable[str] = CORE_REQUIREMENTS,
    version_of: Callable[[str], Optional[str]] = installed_version,
) -> List[str]:
    """The requirements that are not installed, or installed in a version that does not satisfy them."""
    missing = []
    for requirement in requirements:
        name, specifier = split_requirement(requirement)
        version = version_of(name)
        if version is None or (specifier and not satisfies(version, specifier)):
            missing.append(requirement)
    return missing


def shipped_conflicts(
    requirements: Iterable[str],
    version_of: Callable[[str], Optional[str]] = installed_version,
    shipped: Sequence[str] = SLICER_SHIPPED,
) -> List[str]:
    """Requirements that would need a different version of a package Slicer ships (never installed)."""
    protected = {canonical_name(n) for n in shipped}
    conflicts = []
    for requirement in requirements:
        name, specifier = split_requirement(requirement)
        version = version_of(name)
        if (
            canonical_name(name) in protected
            and version is not None
            and specifier
            and not satisfies(version, specifier)
        ):
            conflicts.append(f"{requirement} (Slicer ships {name} {version})")
    return conflicts


def pip_install_requirements(
    requirements: Iterable[str],
    version_of: Callable[[str], Optional[str]] = installed_version,
    shipped: Sequence[str] = SLICER_SHIPPED,
) -> List[str]:
    """The arguments after ``pip install``: the missing requirements, plus every installed package
    that Slicer ships, and the installed torch build (:data:`TORCH_PACKAGES`), pinned to its
    installed version (``numpy==1.26.4``, ``torch==2.5.1+cu121``), so pip keeps it: MONAI
    depends on torch, and pip would otherwise replace the PyTorch extension's CUDA build with a
    PyPI wheel.

    Requirements for a shipped package that is already installed are left out (the pin stands
    for them); check :func:`shipped_conflicts` first.
    """
    protected = {canonical_name(n): n for n in shipped}
    wanted = []
    for requirement in requirements:
        name, _ = split_requirement(requirement)
        if canonical_name(name) in protected and version_of(name) is not None:
            continue
        wanted.append(requirement)
    pins = []
    for _key, name in sorted(protected.items()) + [(canonical_name(n), n) for n in TORCH_PACKAGES]:
        version = version_of(name)
        if version is not None:
            pins.append(f"{name}=={version}")
    return wanted + pins if wanted else []


def describe_missing(torch_problem: Optional[str], missing: Sequence[str]) -> str:
    """The question asked once before installing: what will be installed and why
    (``torch_problem``: :func:`torch_problem`'s answer, None when torch is fine)."""
    torch_item = f"PyTorch {TORCH_REQUIREMENT[len('torch'):]} (through the PyTorch extension, matching your GPU driver)"
    if torch_problem and torch_problem != "missing":
        torch_item += f"; {torch_problem}"
    items = ([torch_item] if torch_problem else []) + list(missing)
    return (
        "LWI needs these Python packages, which are not installed yet:\n\n  - "
        + "\n  - ".join(items)
        + "\n\nInstall them now? This downloads several hundred MB and can take a few minutes; "
        "packages that Slicer ships (numpy, SimpleITK, ...) are kept as they are."
    )


def requirements_from_pyproject(text: str) -> Dict[str, str]:
    """``{canonical name: requirement}`` of ``[project] dependencies`` in a pyproject.toml text
    (a tiny reader for the test that keeps :data:`CORE_REQUIREMENTS` in step with it)."""
    match = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
    if not match:
        return {}
    found = re.findall(r"\"([^\"]+)\"", match.group(1))
    return {canonical_name(split_requirement(r)[0]): r.replace(" ", "") for r in found}
