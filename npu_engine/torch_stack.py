"""The conversion's torch stack as pip installs it: a torchvision built for another torch is hidden.

optimum-intel requires torchvision, and pip resolves it to the registry's build for CUDA torch
(0.28.0+cu130) beside the CPU torch the [convert] extra pins (2.13.0+cpu). Importing that build
fails ("operator torchvision::nms does not exist"), and transformers imports torchvision whenever it
is installed, so every conversion died in a transformers traceback. Nothing the conversion runs
uses torchvision.
"""

import importlib.util
import re
import sys
from pathlib import Path

_VERSION = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.MULTILINE)


def hide_mismatched_torchvision() -> bool:
    """When torchvision's build (the local part of its version: cpu, cu130, none) differs from
    torch's, mark it absent for this process: None in sys.modules, so that `find_spec` answers None
    and an import raises ImportError, which transformers and optimum take as "not installed".
    Neither package is imported to find out. Returns whether it was hidden."""
    if "torchvision" in sys.modules:
        return False
    vision, torch = build_tag("torchvision"), build_tag("torch")
    if vision is None or torch is None or vision == torch:
        return False
    sys.modules["torchvision"] = None  # type: ignore[assignment]
    return True


def build_tag(package: str) -> str | None:
    """The local version part of an installed package (`+cpu` gives "cpu", none gives ""), read
    from its version.py without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "version.py"
        if path.is_file():
            found = _VERSION.search(path.read_text("utf-8", errors="replace"))
            if found:
                return found.group(1).partition("+")[2]
    return ""
