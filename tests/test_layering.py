"""Import layering: which parts of cvae_bridge may import which.

Read from the source with `ast`, lazy imports inside functions included:
- inference (`pipelines`) and `training` never import `evaluation`: evaluation imports them;
- `pipelines` import only the model, the hub, the config types and small utilities
  (PIPELINES_MAY_IMPORT): a trained model runs without the dataset, training or evaluation code;
- the model and its parts never import `training`, `evaluation`, `pipelines` or `data`;
- `data` and `envs` never import the model, training, evaluation or pipelines (envs writes its
  demonstrations through `data`); `utils` imports nothing of the package but `errors`;
- no library module imports the package's `__init__` (`from cvae_bridge import ...`, `from . import
  name` of a non-module): `cvae_bridge/__init__.py` only gathers the public API.

KNOWN_VIOLATIONS lists what the code does today against these rules; it may only shrink. The test
fails on a new violation, and on a listed one that is gone (delete its line).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cvae_bridge"
CORE = {
    "model",
    "config",
    "registry",
    "latent",
    "likelihoods",
    "modalities",
    "hub",
    "layers",
    "errors",
    "version",
}
PIPELINES_MAY_IMPORT = {"pipelines", "model", "hub", "config", "errors", "utils"}
RULES = {
    # part -> parts it must not import
    "training": {"evaluation"},
    # utils sit below everything but errors
    "utils": {"model", "training", "evaluation", "pipelines", "envs", "data", "modalities", "config", "hub"},
    "data": {"model", "training", "evaluation", "pipelines", "envs"},
    "envs": {"model", "training", "evaluation", "pipelines"},
    **{core: {"training", "evaluation", "pipelines", "data"} for core in CORE},
}
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The cvae_bridge modules `path` imports; "cvae_bridge" itself when it reaches the package's
    `__init__` for a name that is not a submodule."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cvae_bridge"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source.split(".")[0] != "cvae_bridge":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if is_module(submodule) else source)
    return found


def part(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def violations() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for target in imports(path):
            if target == "cvae_bridge" and name != "cvae_bridge":
                found.add((name, target))
            elif part(target) in RULES.get(part(name), ()):
                found.add((name, target))
            elif part(name) == "pipelines" and part(target) not in PIPELINES_MAY_IMPORT:
                found.add((name, target))
    return found


def test_imports_follow_the_layers():
    found = violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not new, f"imports across layers (see this file's docstring): {new}"
    assert not gone, f"fixed: remove these from KNOWN_VIOLATIONS so they cannot come back: {gone}"


def test_the_checker_sees_lazy_relative_and_package_imports(tmp_path, monkeypatch):
    package = tmp_path / "cvae_bridge"
    (package / "pipelines").mkdir(parents=True)
    (package / "evaluation").mkdir()
    for file in ("__init__.py", "pipelines/__init__.py", "evaluation/__init__.py", "evaluation/pictures.py"):
        (package / file).write_text("")
    (package / "pipelines" / "lazy.py").write_text(
        "def f():\n    from ..evaluation import pictures\n    from .. import __version__\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert imports(package / "pipelines" / "lazy.py") == {"cvae_bridge.evaluation.pictures", "cvae_bridge"}
    assert violations() == {
        ("cvae_bridge.pipelines.lazy", "cvae_bridge.evaluation.pictures"),
        ("cvae_bridge.pipelines.lazy", "cvae_bridge"),
    }
