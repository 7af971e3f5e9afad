"""Reading YAML strictly: a key given twice is an error, scalars resolve as YAML 1.2 has them, and
a text that would expand past MAX_YAML_NODES values or MAX_YAML_DEPTH levels (an alias bomb, deep
nesting) is refused in a message of bounded length."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

# Bounds on what a YAML text may expand to: aliases share nodes, so a few lines can describe a
# tree of billions of nodes (the "billion laughs"), which writing the run config would expand.
MAX_YAML_NODES = 1_000_000
MAX_YAML_DEPTH = 100


_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error, not an overwrite,
    and plain scalars resolve as YAML 1.2 has them: `1e-4` is a number (YAML 1.1 wants `1.0e-4`),
    and only true / false are booleans, so `mixed_precision: no` stays the string "no" (a boolean
    field still takes yes / no / on / off)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()  # literal keys only: a key merged in (<<: *defaults) may be overridden
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {str(key)[:80]!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# Appended after the integer resolver, so that `12` stays an integer.
_StrictLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)?\.?[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*\.|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text strictly (no duplicate keys) and within the size and depth bounds above;
    `where` names the file or override in errors."""
    try:
        loader = _StrictLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        # One line: the problem and where it is, without PyYAML's excerpt of the text.
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ConfigError(f"{where} is not valid YAML{at}: {problem[:300]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested more than the parser can follow") from None
    nodes, depth = _tree_size(data)
    if nodes > MAX_YAML_NODES or depth > MAX_YAML_DEPTH:
        raise ConfigError(
            f"{where}: expands to {'more than ' * (nodes > MAX_YAML_NODES)}{min(nodes, MAX_YAML_NODES):,} "
            f"values nested {depth} deep (aliases count at each use); a config holds at most "
            f"{MAX_YAML_NODES:,} values nested {MAX_YAML_DEPTH} deep"
        )
    return data


def _tree_size(data: Any) -> tuple[int, int]:
    """(values, depth) of the tree `data` expands to, counting shared nodes at every use; iterative,
    so neither a deep nor a wide tree exhausts the stack, and memoised, so an alias bomb is cheap."""
    sizes: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)) or id(node) in sizes:
            continue
        children = [
            v for v in (node.values() if isinstance(node, dict) else node) if isinstance(v, (dict, list))
        ]
        if not children_done:
            if len(stack) > MAX_YAML_DEPTH * 10_000:  # a cycle cannot come out of a YAML text, but bound it
                return MAX_YAML_NODES + 1, MAX_YAML_DEPTH + 1
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        scalars = len(node) - len(children)
        nested = [sizes.get(id(child), (MAX_YAML_NODES + 1, MAX_YAML_DEPTH + 1)) for child in children]
        sizes[id(node)] = (
            min(1 + scalars + sum(n for n, _ in nested), MAX_YAML_NODES + 1),
            1 + max((d for _, d in nested), default=0),
        )
    return sizes.get(id(data), (1, 0))


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
        ) from None
    data = parse_yaml(text, f"config file {path}")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    return data
