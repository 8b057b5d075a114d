"""``hjepa``: one group with every capability as a subcommand (the same commands as hjepa-train, ...)."""

from __future__ import annotations

import importlib

import click


@click.group()
@click.version_option(package_name="hjepa")
def cli() -> None:
    """Hierarchical JEPA: train, export, evaluate and inspect vision encoders."""


for module_name in ("train", "export", "evaluate", "serve"):
    try:
        command = importlib.import_module(f"hjepa.cli.{module_name}").main
    except ModuleNotFoundError as exc:  # a capability that has not landed is simply not registered
        if exc.name != f"hjepa.cli.{module_name}":
            raise
        continue
    cli.add_command(command, name=module_name if module_name != "evaluate" else "eval")


if __name__ == "__main__":
    cli()
