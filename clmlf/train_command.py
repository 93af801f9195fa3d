"""The trainer's command line, `clmlf-train` (`python -m clmlf.train`). Its arguments are parsed here, before the
trainer and torch are imported, so that --help and a wrong argument answer at once.
"""

from __future__ import annotations

import argparse

from clmlf.data import DATASETS

DESCRIPTION = "Train CLMLF once: select the epoch on dev, write result.json and the checkpoint."


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clmlf.train", description=DESCRIPTION)
    parser.add_argument("--dataset", help=f"{', '.join(DATASETS)} (default: demo)")
    parser.add_argument("--data-root", help="folder holding the data set's folder (not needed for demo)")
    parser.add_argument("--image-folder", help="the images' folder, if not the data set's default (docs/data.md)")
    parser.add_argument("--preset", default=None, help="paper, original, demo or tiny (default: demo)")
    parser.add_argument("--variant", help="full, mlf, mlf-lbcl, mlf-dbcl, text-only or image-only")
    parser.add_argument("--config", help="a flat config JSON (best_config.json, result.json) to start from")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--output", help="folder for result.json and the checkpoint (required to train)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint if present")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and where it differs from the paper preset on the same data set; no training",
    )
    arguments = parser.parse_args(argv)
    if not arguments.print_config and not arguments.output:
        parser.error("--output is required to train")
    return arguments


def main(argv: list[str] | None = None) -> int:
    # --help and a wrong argument end here; the trainer parses the same arguments again once it is imported.
    parse_arguments(argv)
    from clmlf.train import main as train

    return train(argv)
