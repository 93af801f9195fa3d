"""How many Transformer layers does CLMLF need? The paper's Figure 3 as one command.

Question: the fusion Transformer's depth (1-6 layers, image layers fixed) and the image Transformer's depth (1-3,
fusion layers fixed), each point on several seeds, because differences between depths are often smaller than
seed noise. The fixed counts are the base config's: the data set's preset (`build_config(dataset, preset)`),
then --set. The shared point (fixed, fixed) runs once. --grid runs all 6 x 3 combinations instead.

Data: --dataset (default demo, generated on first use into $CLMLF_CACHE_DIR) under --data-root.

Run:
  python studies/layer_sweep.py                      # demo data and preset, a local Ray, MLflow in ./mlflow.db
  python studies/layer_sweep.py --dataset mvsa-single --data-root data --preset paper --seeds 3
  python studies/layer_sweep.py --grid --address auto --storage-path s3://bucket/tune
  python studies/layer_sweep.py --seeds auto         # race the seeds: drop depths separated below the best
  python studies/layer_sweep.py --smoke-test         # three tiny trials (CI)
  python studies/layer_sweep.py --resume             # continue the latest interrupted sweep
"""

from __future__ import annotations

import sys

from studies import cli

KIND = "layer_sweep"
FUSION_LAYERS = [1, 2, 3, 4, 5, 6]
IMAGE_LAYERS = [1, 2, 3]
SMOKE_LAYERS = [1, 2]
LAYER_KEYS = ["model.fusion_layers", "model.image_layers"]


def main(argv: list[str] | None = None) -> int:
    parser = cli.study_parser(KIND, __doc__)
    parser.add_argument("--grid", action="store_true", help="every fusion x image combination (6 x 3)")
    parser.add_argument("--fusion-layers", type=cli.int_list, help="fusion depths (default 1-6; smoke: 1,2)")
    parser.add_argument("--image-layers", type=cli.int_list, help="image depths (default 1-3; smoke: 1,2)")
    cli.add_race_options(parser)
    return cli.main_guard(lambda: run(cli.parse_arguments(parser, argv, KIND)))


def run(arguments) -> int:
    # Ray and the trainer are imported once the arguments are parsed.
    from ray import tune

    from studies.race_searcher import print_race, race_tune_config
    from studies.runner import Study, points_space, points_tune_config

    cli.refuse_options(arguments, {"--num-samples": "the sweep runs each point once per seed; use --seeds"})
    base = cli.base_config(arguments)
    fusion = arguments.fusion_layers or (SMOKE_LAYERS if arguments.smoke_test else FUSION_LAYERS)
    image = arguments.image_layers or (SMOKE_LAYERS if arguments.smoke_test else IMAGE_LAYERS)
    pairs = layer_pairs(fusion, image, base["model.fusion_layers"], base["model.image_layers"], arguments.grid)
    configurations = [{"model.fusion_layers": fusion_layers, "model.image_layers": image_layers}
                      for fusion_layers, image_layers in pairs]  # fmt: skip
    race = cli.race_settings(arguments, len(configurations))
    seeds = (
        list(range(race.max_seeds))
        if race
        else cli.parse_seeds(arguments.seeds, default_count=1 if arguments.smoke_test else 2)
    )
    points = [{**configuration, "seed": seed} for configuration in configurations for seed in seeds]
    cli.check_points(base, points, "--fusion-layers/--image-layers")

    with Study(KIND, arguments, base, {"points": points, "base": base}, question=__doc__) as study:
        if arguments.resume:
            tuner = study.restore()
        elif race:
            # Seeds raced: every configuration on the first seeds, then one more seed per round for those left.
            tune_config = race_tune_config(configurations, seeds, race, study.path, arguments.max_concurrent)
            tuner = tune.Tuner(study.trainable, tune_config=tune_config, run_config=study.run_config())
        else:
            tuner = tune.Tuner(
                study.trainable,
                param_space=points_space(points),
                # One trial per (fusion, image, seed) point.
                tune_config=points_tune_config(points, arguments.max_concurrent),
                run_config=study.run_config(),
            )
        tuner.fit()
        print_race(study.path)
        return study.conclude(table_keys=LAYER_KEYS)


def layer_pairs(fusion: list[int], image: list[int], fixed_fusion: int, fixed_image: int, grid: bool):
    """(fusion, image) pairs: the full grid, or the two one-dimensional sweeps through the fixed point."""
    if grid:
        return [(fusion_layers, image_layers) for fusion_layers in fusion for image_layers in image]
    sweeps = [(fusion_layers, fixed_image) for fusion_layers in fusion]
    sweeps += [(fixed_fusion, image_layers) for image_layers in image]
    return list(dict.fromkeys(sweeps))


if __name__ == "__main__":
    sys.exit(main())
