"""Which settings make CLMLF work best, and how much does each matter? A TPE search (Optuna) on Ray Tune.

Question: good values for the contrastive temperature tau (log scale), the LBCL and DBCL loss weights (floats,
0 switches a loss off), batch size, the fusion and text learning rates, the fusion and image depths, dropout
and the LBCL variant (the paper's tau inside the softmax, or the original code's). Keys fixed with --set are
left out of the search; --search-keys searches a subset.

Optuna: TPE (multivariate, constant liar) asks and learns through a stored Optuna study: SQLite `optuna.db` in the
study's folder, or --optuna-storage URL. `optuna-dashboard sqlite:///<storage>/<name>/optuna.db` opens it, live or
after the search. --warm-start seeds a new search with the completed trials of a finished one (same base config).

Early stopping: ASHA on dev/score, counted in epochs, with a grace period of at least frozen_text_epochs + 1, so
no trial is judged before its text encoder has been fine-tuned. Optuna learns from each trial's
selected/dev/score; test is never seen by either. Each sampled configuration runs on one seed (--set seed=N);
studies/confirm.py re-runs the best ones on fresh seeds and reports their test numbers.

Data: --dataset (default demo) under --data-root.

Run:
  python studies/search.py --num-samples 40 --max-concurrent 4
  python studies/search.py --time-budget-hours 6 --address auto --dataset hfm --preset paper --data-root /data
  python studies/search.py --search-keys temperature,lbcl_weight,dbcl_weight   # the losses only
  python studies/search.py --warm-start runs/tune/search-demo-20260101-120000 --num-samples 20
  python studies/search.py --smoke-test                                          # three tiny trials (CI)
"""

from __future__ import annotations

import sys
from typing import Any

from results import storage
from studies import cli
from studies.trainable import phase_aware_scheduler

KIND = "search"
DEFAULT_SAMPLES = 20
SMOKE_SAMPLES = 3


def search_space() -> dict[str, Any]:
    """The searched keys, in the config's flat keys, and their Tune domains."""
    from ray import tune

    return {
        "temperature": tune.loguniform(0.02, 0.5),
        "lbcl_weight": tune.uniform(0.0, 2.0),
        "dbcl_weight": tune.uniform(0.0, 2.0),
        "batch_size": tune.choice([16, 32, 64]),
        "learning_rate": tune.loguniform(1e-5, 1e-3),
        "text_learning_rate": tune.loguniform(5e-6, 1e-4),
        "model.fusion_layers": tune.randint(1, 7),
        "model.image_layers": tune.randint(1, 4),
        "model.dropout": tune.uniform(0.0, 0.3),
        "lbcl_variant": tune.choice(["paper", "original"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli.study_parser(KIND, __doc__)
    parser.add_argument("--search-keys", help="comma-separated subset of the searched keys (default: all of them)")
    parser.add_argument("--time-budget-hours", type=float, help="stop starting and running trials after this")
    parser.add_argument("--grace-period", type=int, help="ASHA's grace period in epochs (>= frozen_text_epochs + 1)")
    parser.add_argument("--reduction-factor", type=float, default=2, help="ASHA's reduction factor (default 2)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    parser.add_argument(
        "--optuna-storage",
        help="database URL of the stored Optuna study (default: sqlite in the study's folder; for a remote "
        "--storage-path, ./optuna/<name>.db)",
    )
    parser.add_argument(
        "--warm-start",
        metavar="STUDY",
        help="seed the search with the completed trials of a finished search: its folder, or a database URL",
    )
    parser.add_argument("--warm-start-study", help="with a --warm-start URL that holds several studies: which one")
    return cli.main_guard(lambda: run(cli.parse_arguments(parser, argv, KIND)))


def run(arguments) -> int:
    # Ray and the trainer are imported once the arguments are parsed.
    from ray import tune

    from studies import optuna_search
    from studies.runner import TRIAL_PROCESSES, Study

    cli.refuse_options(arguments, {"--seeds": "each sample runs once; set its seed with --set seed=N"})
    base = cli.base_config(arguments)
    space = searched_space(arguments)
    cli.check_space(base, space, "--search-keys/--set")
    num_samples = arguments.num_samples or (SMOKE_SAMPLES if arguments.smoke_test else DEFAULT_SAMPLES)
    time_budget_s = None
    if arguments.time_budget_hours is not None:
        if arguments.time_budget_hours <= 0:
            raise cli.StudyInputError("--time-budget-hours must be > 0")
        time_budget_s = arguments.time_budget_hours * 3600
        # A time budget alone samples until the time is up.
        num_samples = arguments.num_samples or -1
    described_space = {key: cli.describe_domain(domain) for key, domain in space.items()}
    # ASHA on dev, counted in epochs; built here so that a bad --grace-period is refused before Ray starts.
    scheduler = phase_aware_scheduler(base, arguments.grace_period, reduction_factor=arguments.reduction_factor)
    # The stored Optuna study and the warm start's trials, checked before Ray starts too.
    stored = optuna_search.stored_study_of(arguments, storage.join(arguments.storage_path, arguments.name))
    if arguments.warm_start_study and not arguments.warm_start:
        raise cli.StudyInputError("--warm-start-study: names a study in a --warm-start storage; give --warm-start")
    seeded = []
    if arguments.warm_start and not arguments.resume:
        seeded = optuna_search.warm_start_trials(arguments, base, space)

    with Study(KIND, arguments, base, described_space, question=__doc__) as study:
        if arguments.resume:
            tuner = study.restore()
        else:
            # Optuna's TPE learns from each trial's final dev score; ASHA stops weak trials early.
            searcher = optuna_search.stored_search(stored, base, described_space, seeded, arguments.sampler_seed)
            study.record_optuna_study(stored)
            tuner = tune.Tuner(
                study.trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=num_samples,
                    time_budget_s=time_budget_s,
                    max_concurrent_trials=arguments.max_concurrent,
                    **TRIAL_PROCESSES,
                ),
                run_config=study.run_config(),
            )
        tuner.fit()
        return study.conclude(table_keys=list(space), show_trials=True)


def searched_space(arguments) -> dict[str, Any]:
    """The search space, restricted to --search-keys, without the keys that --set fixes."""
    space = search_space()
    keys = list(space)
    if arguments.search_keys is not None:
        keys = [key.strip() for key in arguments.search_keys.split(",") if key.strip()]
        unknown = [key for key in keys if key not in space]
        if unknown:
            raise cli.StudyInputError(f"--search-keys: {unknown} are not searched keys; choose from {list(space)}")
    fixed = {assignment.partition("=")[0].strip() for assignment in arguments.set}
    if fixed & set(keys):
        print(f"note: --set fixes {sorted(fixed & set(keys))}; they are not searched")
    return {key: space[key] for key in keys if key not in fixed}


if __name__ == "__main__":
    sys.exit(main())
