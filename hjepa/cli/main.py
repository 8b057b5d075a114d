"""``hjepa``: one group with every capability as a subcommand (the same commands as hjepa-train, ...)."""

from __future__ import annotations

import importlib

import click


@click.group()
@click.version_option(package_name="hjepa")
def cli() -> None:
    """Hierarchical JEPA: train, export, evaluate and inspect vision encoders."""


NAMES = {"evaluate": "eval", "importer": "import"}  # module -> subcommand

for module_name in ("train", "importer", "export", "evaluate", "serve", "embed"):
    try:
        command = importlib.import_module(f"hjepa.cli.{module_name}").main
    except ModuleNotFoundError as exc:  # not landed yet: not registered
        if exc.name != f"hjepa.cli.{module_name}":
            raise
        continue
    cli.add_command(command, name=NAMES.get(module_name, module_name))


if __name__ == "__main__":
    cli()
