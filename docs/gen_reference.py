"""Generate the reference pages at build time (mkdocs-gen-files), from the code itself so they cannot drift:
`reference/cli.md` from the argparse parsers of `bfn.cli`, `reference/config.md` from the dataclasses of
`bfn.config` (each key's type, default and the comment written next to it)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import typing

import mkdocs_gen_files

os.environ["COLUMNS"] = "100"  # argparse wraps help text to the terminal width: fix it for a stable page

from bfn import config as config_module  # noqa: E402
from bfn.cli import build_parser  # noqa: E402


def cli_page() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")  # argparse's own type
    lines = ["# Command line", "", "Generated from `bfn --help` and each command's `--help`.", "", "```text",
             parser.format_help().rstrip(), "```", ""]
    for name, p in sub.choices.items():
        lines += [f"## bfn {name}", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def field_comments(cls: type) -> dict[str, str]:
    """The comment written after each field of a dataclass (`name: type = default  # comment`)."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.lineno - 1]
            if "#" in line:
                out[node.target.id] = line.split("#", 1)[1].strip()
    return out


def type_name(tp: object) -> str:
    text = str(tp).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "")


def config_rows(cls: type, prefix: str, rows: list[tuple[str, str, str, str]]) -> None:
    hints = typing.get_type_hints(cls, vars(config_module))
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            config_rows(tp, f"{key}.", rows)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, type_name(tp), repr(default), comments.get(f.name, "")))


def config_page() -> str:
    rows: list[tuple[str, str, str, str]] = []
    config_rows(config_module.RunConfig, "", rows)
    sections = {}
    for cls in (config_module.ModelConfig, config_module.FlowConfig, config_module.DDPMConfig,
                config_module.NetworkConfig, config_module.DataConfig, config_module.TrainConfig,
                config_module.SampleConfig):
        sections[cls.__name__] = (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""
    lines = ["# Config keys", "",
             "Every key of a run configuration, generated from the dataclasses in `bfn/config.py` (type, default and "
             "the comment next to each field). Presets (`bfn presets NAME` prints one) set some of them; "
             "`key=value` on the command line sets any, e.g. `bfn train mnist-discrete train.steps=500`; "
             "`~data.options.KEY` removes an option.", "",
             "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tp, default, comment in rows:
        cell = comment.replace("|", "\\|")
        lines.append(f"| `{key}` | `{tp.replace('|', '&#124;')}` | `{default.replace('|', '&#124;')}` | {cell} |")
    lines += ["", "## Sections", ""]
    lines += [f"- `{name}`: {doc}" for name, doc in sections.items() if doc]
    lines += ["", "## Dataset options (`data.options`)", "", "| dataset | options | description |",
              "| --- | --- | --- |"]
    from bfn.data.registry import REGISTRY

    for name, entry in REGISTRY.items():
        opts = ", ".join(f"`{o}`" for o in entry.options) or "none"
        lines.append(f"| `{name}` | {opts} | {entry.description} |")
    return "\n".join(lines) + "\n"


with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(cli_page())
with mkdocs_gen_files.open("reference/config.md", "w") as f:
    f.write(config_page())
