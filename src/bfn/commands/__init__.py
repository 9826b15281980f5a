"""Subcommands of the `bfn` CLI beyond train/sample (one module each; see bfn.cli.COMMAND_MODULES)."""
