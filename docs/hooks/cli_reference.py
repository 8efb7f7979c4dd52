"""mkdocs hook: the CLI reference page is generated from ``lottery.cli.build_parser()`` at build time, so it lists
exactly the flags, defaults and help that ``lottery <subcommand> --help`` prints (both come from the option
dataclasses' fields). ``docs/cli.md`` holds the hand-written part and the marker this replaces."""
from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # document this checkout, not another installed copy
from lottery.cli import build_parser  # noqa: E402

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(build_parser()))


def render(parser: argparse.ArgumentParser) -> str:
    """Markdown for every subcommand: its one-line purpose, its description, and a table of its arguments."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    purpose = {choice.dest: choice.help for choice in sub._choices_actions}
    out = []
    for name, command in sub.choices.items():
        line = _text(purpose.get(name) or "")
        out += [f"## `lottery {name}`", "", line[:1].upper() + line[1:] + ".", ""]
        if command.description:
            out += ["```text", command.description.strip(), "```", ""]
        rows = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
        if not rows:
            out += ["No options.", ""]
            continue
        out += ["| argument | TOML key | what it sets |", "|---|---|---|"]
        formatter = command._get_formatter()
        for action in rows:
            help = _text(formatter._expand_help(action) if action.help else "")
            key = f"`{action.dest}`" if action.option_strings and action.dest != "config" else ""
            out.append(f"| `{_signature(action)}` | {key} | {help} |")
        out.append("")
    return "\n".join(out)


def _signature(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest.upper()
        return f"[{name} ...]" if action.nargs == "*" else name
    flag = action.option_strings[-1]
    if action.nargs == 0:  # a switch
        return flag
    return f"{flag} {action.metavar or action.dest.upper()}"


def _text(help: str) -> str:
    """Help text as one table cell: outside code spans ``<name>`` is text (not a tag), ``[x]`` not a link and
    ``|`` not a column; one line."""
    parts = re.split(r"(`[^`]*`)", " ".join(help.split()))
    return "".join(p if p.startswith("`") else re.sub(r"([|\[\]*_])", r"\\\1", html.escape(p, quote=False))
                   for p in parts)
