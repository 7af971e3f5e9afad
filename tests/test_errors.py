"""Every error cvae_bridge raises on purpose derives from CvaeBridgeError (and from the built-in
exception it refines, so `except ValueError` keeps working)."""

import ast
import builtins
import inspect
from pathlib import Path

from cvae_bridge import errors

PACKAGE = Path(__file__).resolve().parents[1] / "cvae_bridge"
# Abstract methods of the base classes; IndexError in __getitem__, which iteration relies on.
ALLOWED = {"NotImplementedError", "IndexError"}


def test_library_code_raises_only_its_own_errors():
    builtin = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call | ast.Name):
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = getattr(target, "id", None)
                if name in builtin - ALLOWED:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} raises {name}")
    assert not found, found


def test_every_error_has_the_common_base_and_a_builtin_one():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) > 5
    for cls in classes:
        assert issubclass(cls, errors.CvaeBridgeError)
        assert cls is errors.CvaeBridgeError or any(b.__module__ == "builtins" for b in cls.__mro__[1:-2])


def test_an_unknown_name_reads_as_its_message():
    assert str(errors.UnknownNameError("unknown encoder 'x'")) == "unknown encoder 'x'"
