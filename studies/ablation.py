"""What does each part of CLMLF add? The paper's Table 3 as one command.

Question: the text-only and image-only models, the multimodal fusion alone (mlf), with one contrastive task
(mlf-lbcl, mlf-dbcl) and the full model, each on several seeds, so that a difference between rows can be told
from seed noise. Rows are configured as in Table 3 (`clmlf.config.ablation_row`): text-only fine-tunes the text
encoder from the first epoch, image-only trains the ResNet's weights on the images alone, and the four
multimodal rows differ from the base config (the data set's preset, then --set) in `model.variant` only.

Data: --dataset (default demo) under --data-root.

Run:
  python studies/ablation.py                                   # six rows x 2 seeds on the demo set
  python studies/ablation.py --dataset mvsa-single --data-root data --preset paper --seeds 5
  python studies/ablation.py --variants mlf,full --seeds 0,1,2
  python studies/ablation.py --seeds auto --max-seeds 8          # race the seeds
  python studies/ablation.py --smoke-test                      # three tiny trials (CI)
"""

from __future__ import annotations

import sys

from clmlf.config import TABLE3_ROWS, TrainConfig, ablation_row
from studies import cli

KIND = "ablation"
SMOKE_ROWS = ["text-only", "image-only", "full"]


def main(argv: list[str] | None = None) -> int:
    parser = cli.study_parser(KIND, __doc__)
    parser.add_argument("--variants", help=f"comma-separated rows (default all: {','.join(TABLE3_ROWS)})")
    cli.add_race_options(parser)
    return cli.main_guard(lambda: run(cli.parse_arguments(parser, argv, KIND)))


def run(arguments) -> int:
    # Ray and the trainer are imported once the arguments are parsed.
    from ray import tune

    from studies.race_searcher import print_race, race_tune_config
    from studies.runner import Study, points_space, points_tune_config

    cli.refuse_options(arguments, {"--num-samples": "each row runs once per seed; use --seeds"})
    base = cli.base_config(arguments)
    rows = SMOKE_ROWS if arguments.smoke_test else list(TABLE3_ROWS)
    if arguments.variants is not None:
        rows = [variant.strip() for variant in arguments.variants.split(",") if variant.strip()]
        unknown = [variant for variant in rows if variant not in TABLE3_ROWS]
        if unknown:
            raise cli.StudyInputError(f"--variants: {unknown} are not Table 3 rows; choose from {TABLE3_ROWS}")
    race = cli.race_settings(arguments, len(rows))
    seeds = (
        list(range(race.max_seeds))
        if race
        else cli.parse_seeds(arguments.seeds, default_count=1 if arguments.smoke_test else 2)
    )
    points = table3_points(base, rows, seeds)
    cli.check_points(base, points, "--variants")

    with Study(KIND, arguments, base, {"points": points, "base": base}, question=__doc__) as study:
        if arguments.resume:
            tuner = study.restore()
        elif race:
            # Seeds raced: the rows are the configurations (each point of a row without its seed).
            configurations = [{key: value for key, value in point.items() if key != "seed"}
                              for point in points if point["seed"] == seeds[0]]  # fmt: skip
            tune_config = race_tune_config(configurations, seeds, race, study.path, arguments.max_concurrent)
            tuner = tune.Tuner(study.trainable, tune_config=tune_config, run_config=study.run_config())
        else:
            tuner = tune.Tuner(
                study.trainable,
                param_space=points_space(points),
                # One trial per (variant, seed) point.
                tune_config=points_tune_config(points, arguments.max_concurrent),
                run_config=study.run_config(),
            )
        tuner.fit()
        print_race(study.path)
        return study.conclude(table_keys=["model.variant"])


def table3_points(base: dict, rows: list[str], seeds: list[int]) -> list[dict]:
    """One point per (row, seed). Every point sets every key that any row changes, to the base value where its
    row leaves it alone: a key a point lacks would be drawn at random from the other rows' values."""
    base_config = TrainConfig.from_flat_dict(base)
    overrides = {row: ablation_row(base_config, row) for row in rows}
    keys = list(dict.fromkeys(key for row in rows for key in overrides[row]))
    return [
        {**{key: overrides[row].get(key, base[key]) for key in keys}, "seed": seed} for row in rows for seed in seeds
    ]


if __name__ == "__main__":
    sys.exit(main())
