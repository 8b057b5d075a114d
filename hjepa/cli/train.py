"""``hjepa-train``: pretrain a Hierarchical JEPA encoder (one process, or many under torchrun)."""

from __future__ import annotations

from pathlib import Path

import click

from hjepa.cli.errors import user_errors
from hjepa.cli.signals import stop_cleanly


@click.command("train")
@click.option("--config", "config_name", default="fashion-mnist", show_default=True,
              help="Preset name (see --list-presets) or a YAML file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set optim.lr=5e-4 (repeatable).")
@click.option("--out", "out_dir", default=None, help="Run directory (default: train.out_dir of the config).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Start over in an OUT that already holds a run (its checkpoints and "
              "metrics are replaced).")
@click.option("--stop-after", type=int, default=None, metavar="STEP",
              help="Stop after STEP steps (checkpointed; schedules unchanged); continue later with --resume.")
@click.option("--list-presets", is_flag=True, help="List the packaged presets and exit.")
def main(config_name: str, overrides: tuple[str, ...], out_dir: str | None, resume: bool, overwrite: bool,
         stop_after: int | None, list_presets: bool) -> None:
    """Train HJEPA; writes OUT/config.yaml, OUT/checkpoints/ and OUT/metrics.jsonl.

    Multi-GPU / multi-node: torchrun --nproc_per_node N -m hjepa.cli.train --config ...
    """
    from hjepa import dist
    from hjepa.config import load_config, preset_names

    if list_presets:
        click.echo("\n".join(preset_names()))
        return
    if resume and overwrite:
        raise click.UsageError("--resume continues the run in OUT and --overwrite starts it over: give one of them")
    with user_errors():
        cfg = load_config(config_name, list(overrides))
        if out_dir:  # verbatim: --set parses YAML (a folder named 2024 -> int)
            cfg.train.out_dir = out_dir
        from hjepa.train import train

        last = Path(cfg.train.out_dir) / "checkpoints" / "last.pt"

        def kept() -> str:
            if last.is_file():
                return f"the last checkpoint, {last}, is kept: continue with --resume"
            return "no checkpoint had been written yet"

        with stop_cleanly(kept):
            result = train(cfg, resume=resume, stop_at=stop_after, overwrite=overwrite)
    if dist.is_main():
        click.echo(f"run: {result.out_dir}  steps: {result.steps}  final loss: {result.final_loss:.4f}")
        if result.knn:
            for k, scores in result.knn.items():
                click.echo(f"k-NN (k={k}) top-1: {scores['top1']:.2f}%  top-5: {scores['top5']:.2f}%")
    dist.destroy()


if __name__ == "__main__":
    main()
