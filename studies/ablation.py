"""What does each part of CLMLF add? The paper's Table 3 as one command.

Question: the text-only and image-only models, the multimodal fusion alone (mlf), with one contrastive task
(mlf-lbcl, mlf-dbcl) and the full model, each on several seeds, so that a difference between rows can be told
from seed noise. Everything but `model.variant` is the base config (the data set's preset, then --set).

Data: --dataset (default demo) under --data-root.

Run:
  python studies/ablation.py                                   # six rows x 2 seeds on the demo set
  python studies/ablation.py --dataset mvsa-single --data-root data --preset paper --seeds 5
  python studies/ablation.py --variants mlf,full --seeds 0,1,2
  python studies/ablation.py --smoke-test                      # three tiny trials (CI)
"""

from __future__ import annotations

import sys

from clmlf.config import VARIANTS
from studies import common

KIND = "ablation"
# Table 3's rows, in its order.
TABLE_ROWS = ["text-only", "image-only", "mlf", "mlf-lbcl", "mlf-dbcl", "full"]
SMOKE_ROWS = ["text-only", "image-only", "full"]


def main(argv: list[str] | None = None) -> int:
    parser = common.study_parser(KIND, __doc__)
    parser.add_argument("--variants", help=f"comma-separated rows (default all: {','.join(TABLE_ROWS)})")

    def run() -> int:
        arguments = common.parse_arguments(parser, argv, KIND)
        common.refuse_options(arguments, {"--num-samples": "each row runs once per seed; use --seeds"})
        base = common.base_config(arguments)
        seeds = common.parse_seeds(arguments.seeds, default_count=1 if arguments.smoke_test else 2)
        rows = SMOKE_ROWS if arguments.smoke_test else TABLE_ROWS
        if arguments.variants is not None:
            rows = [variant.strip() for variant in arguments.variants.split(",") if variant.strip()]
            unknown = [variant for variant in rows if variant not in VARIANTS]
            if unknown:
                raise common.StudyInputError(f"--variants: {unknown} are not variants; choose from {VARIANTS}")
        points = [{"model.variant": variant, "seed": seed} for variant in rows for seed in seeds]
        common.check_points(base, points, "--variants")
        study = common.Study(
            kind=KIND,
            arguments=arguments,
            base=base,
            points=points,
            group_by=["model.variant"],
            described_space={"points": points, "base": base},
        )
        return common.run_study(study)

    return common.main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
