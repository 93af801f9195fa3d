"""Study reports: read finished studies from MLflow and from their Tune folders (results/), rank the
configurations by their mean dev score over seeds (never by test), compare each with the best, and write per data set
the best configuration (loadable by the trainer) with the top group, a summary table and one self-contained HTML page
with the layer curves, the loss-weight effects, Optuna's parameter importances, the best configurations next to the
paper's rows, the best model's analyses, the ablation next to the paper's Table 3 and the confirmation runs next to
its Table 1 (Table 6 for the aspect-based Twitter sets). `python -m report` is the command line
(report/cli.py).

A report renders results; it never trains. What needs a model run (the best model's analyses) is drawn when a study
concludes or by `python -m analyses`, into files that the report reads.
"""

from __future__ import annotations

from pathlib import Path


def write_study_report(
    output_dir: Path,
    *,
    tracking_uri: str | None = None,
    parent_run_ids: list[str] | None = None,
    experiment_names: list[str] | None = None,
    tune_dirs: list[Path] | None = None,
    analysis_dirs: list[Path] | None = None,
) -> dict[str, Path]:
    """Read the studies, write `<output_dir>/<dataset>/` for every data set among them; returns dataset -> folder.

    MLflow is read when a tracking URI, parent runs or experiments are given, or when no Tune folder is: the
    named parent runs' children and the named experiments' trial runs, or, when neither is named, every
    `clmlf/...` experiment at the tracking URI (default: `tracking.uri.resolve_tracking_uri`). A trial found in both
    is MLflow's, unless MLflow lacks something its Tune folder has (results/folder_fallback.py).

    analysis_dirs: folders of analyses already drawn (analysis.json and figures, analyses/); the
    `analysis/` folder of each local study folder among `tune_dirs` is read too. Each data set's page shows those of
    its models, or says which command draws them.
    """
    # Imported here so that the command line's --help needs neither MLflow, Ray nor matplotlib.
    from report.analyses import read_analysis
    from report.files import write_dataset_report
    from results.folder_fallback import merge_with_folders
    from results.ranking import rank
    from results.record import ResultsError
    from results.tune_folder import read_tune_trials
    from tracking.mlflow_runs import read_mlflow_trials
    from tracking.uri import resolve_tracking_uri

    logged = []
    if parent_run_ids or experiment_names or tracking_uri or not tune_dirs:
        try:
            logged = read_mlflow_trials(resolve_tracking_uri(tracking_uri), experiment_names, parent_run_ids)
        except ResultsError:
            raise
        except Exception as error:  # the store decides what it raises; the Tune folders still hold the studies
            if not tune_dirs:
                raise
            print(f"report: MLflow could not be read ({type(error).__name__}); the report uses the Tune folder(s)")
    from_folders = [trial for tune_dir in tune_dirs or [] for trial in read_tune_trials(tune_dir)]
    trials, duplicates, notes = merge_with_folders(logged, from_folders)
    if duplicates:
        print(f"report: {duplicates} trial(s) found both in MLflow and in a Tune folder were counted once")
    for line in notes:
        print(f"report: {line}")
    if not trials:
        raise ResultsError("no trials found in the given studies (check the experiment names, run ids and folders)")

    datasets = sorted({trial.dataset for trial in trials})
    searched = [*(analysis_dirs or []), *study_analysis_dirs(tune_dirs or [])]
    found = [files for files in map(read_analysis, searched) if files is not None]
    folders: dict[str, Path] = {}
    for dataset in datasets:
        ranking = rank(dataset, [trial for trial in trials if trial.dataset == dataset])
        folder = Path(output_dir) / _safe_name(dataset)
        written = write_dataset_report(
            ranking,
            folder,
            found,
            searched,
            only_dataset=len(datasets) == 1,
            tune_dirs=[str(tune_dir) for tune_dir in tune_dirs or []],
        )
        folders[dataset] = folder
        print(
            f"report {dataset}: {len(ranking.completed)} completed and {len(ranking.failed)} failed trial(s) in "
            f"{len(ranking.configurations)} configuration(s)"
        )
        for path in written:
            print(f"  {path}")
    return folders


def study_analysis_dirs(tune_dirs: list[Path]) -> list[Path]:
    """The `analysis/` folder of each local study folder among `tune_dirs` (or directly inside one of them)."""
    from results import storage

    folders = []
    for tune_dir in tune_dirs:
        if storage.is_remote(str(tune_dir)) or not Path(tune_dir).is_dir():
            continue
        studies = [Path(tune_dir), *sorted(path for path in Path(tune_dir).iterdir() if path.is_dir())]
        folders += [
            study / storage.ANALYSIS_FOLDER for study in studies if (study / storage.BASE_CONFIG_FILE).is_file()
        ]
    return folders


def _safe_name(dataset: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in dataset)
