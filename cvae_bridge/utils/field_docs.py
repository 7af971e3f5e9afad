"""One-line descriptions of dataclass fields, read from the comments beside them in the source: the
comment on the field's own line(s), else the comment block right above it. The comments stay the
one place where a config field is described; `cvae-bridge config --explain` prints them."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize


@functools.cache
def field_descriptions(cls: type) -> dict[str, str]:
    """Field name -> its description, for a dataclass and the dataclasses it derives from (a
    subclass's comment wins)."""
    descriptions: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            descriptions.update(_own_descriptions(klass))
    return descriptions


def _own_descriptions(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source is kept (an interactive session)
        return {}
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    body = ast.parse(source).body[0].body
    descriptions = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        inline = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        above, n = [], node.lineno - 1
        while n in comments and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        text = " ".join(inline or above)
        if text and not text.startswith("noqa"):
            descriptions[node.target.id] = text
    return descriptions
