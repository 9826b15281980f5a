"""Subcommands of the `bfn` CLI beyond train/sample (one module each; see bfn.cli.COMMAND_MODULES)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's examples as written and shows real defaults only: no "(default: None)" or
    "(default: False)", and nothing added where the help text already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or action.default == [] or "default" in text:
            return text
        return super()._get_help_string(action)
