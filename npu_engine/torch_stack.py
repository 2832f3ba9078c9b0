"""The conversion's torch stack as pip installs it: a torchvision built for another torch is hidden.

optimum-intel requires torchvision, and pip resolves it to the registry's build for CUDA torch
(0.28.0+cu130) beside the CPU torch the [convert] extra pins (2.13.0+cpu). Importing that build
fails ("operator torchvision::nms does not exist"), and transformers imports torchvision whenever it
is installed, so every conversion died in a transformers traceback. Nothing the conversion runs
uses torchvision.

`python -m npu_engine.torch_stack` prints, as JSON, what a conversion process sees of the stack
(`read_torch_stack` runs it for `npu-engine doctor`).
"""

import importlib
import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_VERSION = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.MULTILINE)


@dataclass(frozen=True)
class TorchStack:
    """What a fresh conversion process sees: each package's build tag (None: not installed),
    whether it hides torchvision, and what importing torchvision raised where it is not hidden."""

    torch_build: str | None
    torchvision_build: str | None
    hidden: bool
    import_error: str | None


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


def conversion_view() -> TorchStack:
    """The stack as this process, fresh, would convert with: torchvision hidden as npu-convert
    hides it, else imported as transformers would import it (which imports torch: seconds)."""
    torch, vision = build_tag("torch"), build_tag("torchvision")
    hidden = hide_mismatched_torchvision()
    error = None
    if vision is not None and not hidden:
        try:
            importlib.import_module("torchvision")
        except Exception as raised:  # a broken build raises RuntimeError or OSError, not ImportError
            lines = str(raised).strip().splitlines()
            error = f"{type(raised).__name__}: {lines[-1] if lines else ''}".strip()
    return TorchStack(torch, vision, hidden, error)


def read_torch_stack(python: str = sys.executable, timeout: float = 300.0) -> TorchStack:
    """`conversion_view()` from a fresh interpreter: this process may have imported torchvision or
    hidden it already (the tests' conftest does). OSError, subprocess.SubprocessError or ValueError
    when the child cannot say."""
    done = subprocess.run(
        [python, "-m", "npu_engine.torch_stack"], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ValueError(f"python -m npu_engine.torch_stack failed: {last}")
    try:
        raw = json.loads(done.stdout)
        return TorchStack(
            raw["torch_build"], raw["torchvision_build"], bool(raw["hidden"]), raw["import_error"]
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"python -m npu_engine.torch_stack printed no stack ({error!r})") from None


if __name__ == "__main__":
    print(json.dumps(asdict(conversion_view())))
