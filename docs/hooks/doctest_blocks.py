"""Griffe extension (loaded by mkdocstrings): the package's docstrings hold doctest examples (``>>>`` lines, which
``python -m pytest`` runs) without a Markdown fence. Without one, Markdown reads ``>>>`` as a quote and
``x["levels"][2]`` as a link; this fences each example, its output included, as a Python console block."""
from __future__ import annotations

import griffe


def fence(text: str) -> str:
    out, example = [], False
    for line in text.splitlines():
        starts = line.lstrip().startswith(">>>")
        if starts and not example:
            out.append("```pycon")
            example = True
        elif example and not line.strip():  # a blank line ends a doctest example
            out.append("```")
            example = False
        out.append(line)
    if example:
        out.append("```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence(obj.docstring.value)
