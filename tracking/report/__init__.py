"""Study reports: read finished studies from MLflow and from their Tune folders (tracking/results/), rank the
configurations by their mean dev score over seeds (never by test), and write per data set the best configuration
(loadable by the trainer), a summary table and one self-contained HTML page with the layer curves, the loss-weight
effects, Optuna's parameter importances, the best configurations next to the paper's rows, the ablation next to
the paper's Table 3 and the confirmation runs next to its Table 1 (Table 6 for the aspect-based Twitter sets).
`python -m tracking.report` is the command line (tracking/report/cli.py).
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
    best_checkpoint: Path | None = None,
    text_only_dir: Path | None = None,
) -> dict[str, Path]:
    """Read the studies, write `<output_dir>/<dataset>/` for every data set among them; returns dataset -> folder.

    MLflow is read when a tracking URI, parent runs or experiments are given, or when no Tune folder is: the
    named parent runs' children and the named experiments' trial runs, or, when neither is named, every
    `clmlf/...` experiment at the tracking URI (default: `tracking.uri.resolve_tracking_uri`). A trial found in both
    is MLflow's, unless MLflow lacks something its Tune folder has (tracking/results/folder_fallback.py).

    best_checkpoint: the best trial's checkpoint folder of a one-data-set study; its analyses (tracking/analyses/)
    go into the report, against a text-only counterpart trained once into `text_only_dir`.
    """
    # Imported here so that the command line's --help needs neither MLflow, Ray nor matplotlib.
    from tracking.report.files import write_dataset_report
    from tracking.results.folder_fallback import merge_with_folders
    from tracking.results.mlflow_runs import read_mlflow_trials
    from tracking.results.ranking import rank
    from tracking.results.record import ResultsError
    from tracking.results.tune_folder import read_tune_trials
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
    if best_checkpoint is not None and len(datasets) > 1:
        raise ResultsError(f"a best checkpoint belongs to one data set's study; these trials cover {datasets}")
    folders: dict[str, Path] = {}
    for dataset in datasets:
        ranking = rank(dataset, [trial for trial in trials if trial.dataset == dataset])
        folder = Path(output_dir) / _safe_name(dataset)
        written = write_dataset_report(ranking, folder, best_checkpoint, text_only_dir)
        folders[dataset] = folder
        print(
            f"report {dataset}: {len(ranking.completed)} completed and {len(ranking.failed)} failed trial(s) in "
            f"{len(ranking.configurations)} configuration(s)"
        )
        for path in written:
            print(f"  {path}")
    return folders


def _safe_name(dataset: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in dataset)
