"""The analyses of a study's best model: the checkpoint the study kept of its best trial's selected epoch, against
its text-only counterpart, drawn into `<study folder>/analysis/` when the study concludes (studies/runner.py) or
later with `python -m analyses <study folder>`. The report only reads these files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from analyses.outputs import TEXT_ONLY_FOLDER, AnalysisSettings, analyse, text_only_counterpart, write
from results import storage


def analyse_best_model(
    checkpoint: Path, folder: Path, settings: AnalysisSettings | None = None, log: Callable[[str], None] = print
) -> list[Path]:
    """The analyses of the model in `checkpoint` written to `folder`; its text-only counterpart is trained once into
    `folder/text-only` and reused next time. Returns the files written (the counterpart's not among them)."""
    settings = settings or AnalysisSettings()
    text_only = text_only_counterpart(checkpoint, folder / TEXT_ONLY_FOLDER, settings.overrides, log=log)
    return write(analyse(checkpoint, text_only, settings, log=log), folder)


def is_study_folder(folder: Path) -> bool:
    """A study's folder (its base config beside Tune's state), rather than a training run's."""
    return (folder / storage.BASE_CONFIG_FILE).is_file() and (folder / storage.PARENT_RUN_FILE).is_file()


def best_trial_checkpoint(study_folder: Path) -> tuple[str, Path]:
    """The best trial of a finished study (by the one ranking rule) and the folder of the checkpoint the study kept of
    its selected epoch; ValueError where the study has no completed trial or kept no checkpoint for it."""
    from ray.tune import ExperimentAnalysis

    from results.ranking import rank_configurations
    from results.tune_folder import read_study_folder, selected_checkpoint

    configurations = rank_configurations(read_study_folder(str(study_folder)))
    if not configurations:
        raise ValueError(f"{study_folder}: the study has no completed trial to analyse")
    best = configurations[0].best_trial()
    checkpoint = selected_checkpoint(ExperimentAnalysis(str(study_folder)), best.trial_id)
    if checkpoint is None or not Path(checkpoint.path).is_dir():
        raise ValueError(f"{study_folder}: no checkpoint of the best trial {best.trial_id} was kept")
    return best.trial_id, Path(checkpoint.path)
