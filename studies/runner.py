"""Running a study on Ray Tune: the checks that need the study's folder and its tracking store, Ray and the resources
of a trial, the MLflow parent run, Tune's run config, resuming, and what a finished study prints and exports.

A study script builds its own Tuner around these:

    with Study(KIND, arguments, base, described_space, question=__doc__) as study:
        if arguments.resume:
            tuner = study.restore()
        else:
            tuner = tune.Tuner(study.trainable, param_space=..., tune_config=tune.TuneConfig(..., **TRIAL_PROCESSES),
                               run_config=study.run_config())
        tuner.fit()
        return study.conclude(table_keys)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from studies.cli import StudyInputError, check_dataset, saved_arguments, study_question
from studies.failures import RetryPolicy
from studies.live_view import StudyProgress
from studies.summary import print_summary
from studies.trainable import SELECTED_CHECKPOINT, train_trial, trial_dirname
from tracking import optuna_study, storage
from tracking.mlflow_logging import (
    StudyRun,
    check_tracking_uri,
    finish_study_run,
    log_best_model,
    log_study_outputs,
    reopen_study_run,
    runs_page,
    start_study_run,
    tag_study_run,
)
from tracking.optuna_study import STORAGE_TAG, STUDY_TAG, StoredStudy
from tracking.results.ranking import rank
from tracking.results.record import RANKING_METRIC, TrialRecord, describe_values, trials_frame
from tracking.results.tune_folder import read_study_folder
from tracking.study_callback import MlflowStudyCallback
from tracking.uri import hide_password, resolve_tracking_uri

RETRIES_PER_TRIAL = 2
# Passed to every trial's worker process, so that a cluster's nodes use the driver's data and caches.
FORWARDED_VARIABLES = ("CLMLF_CACHE_DIR", "CLMLF_DATA_ROOT", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                       "TORCH_HOME")  # fmt: skip
# Tune settings of every study: trial folders named by trial id, and reused worker processes. A finished trial's
# process runs the next trial, so no new worker imports torch and transformers again, and the feature cache and
# encoder files stay warm.
TRIAL_PROCESSES: dict[str, Any] = {"trial_dirname_creator": trial_dirname, "reuse_actors": True}
FINISHED_STATUSES = ("TERMINATED", "ERROR")


@dataclass
class Study:
    """One study run (or resumed) on Ray Tune and logged to MLflow; a context that holds Ray while it is open.

    base: the flat config every trial starts from (saved as base_config.json; a resumed study uses the saved one).
    described_space: what the study searches, as JSON, for the parent run's search_space.json.
    question: the study page's docstring; its title and `Question:` paragraph describe the MLflow experiment.
    """

    kind: str
    arguments: argparse.Namespace
    base: dict[str, Any]
    described_space: dict[str, Any]
    question: str
    parent: StudyRun | None = None
    # The trial function with its base config and resources, for Tuner(...) and restore().
    trainable: Any = None
    # The study's trials as read back after fit(), by conclude().
    records: list[TrialRecord] = field(default_factory=list)

    @property
    def path(self) -> str:
        return storage.join(self.arguments.storage_path, self.arguments.name)

    @property
    def dataset(self) -> str:
        return self.base["dataset"]

    def __enter__(self) -> Study:
        """Check everything that can be checked before Ray starts, start Ray, open the MLflow parent run."""
        tracking_uri = self._check()
        # With one checkpoint kept per trial, Tune saves its state at every checkpoint on purpose (run_config).
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        # Tune's own table ignores a progress reporter; the study's live view (studies/live_view.py) is one.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        start_ray(self.arguments.address)
        try:
            resources = trial_resources(self.arguments)
            self.trainable = tune.with_resources(tune.with_parameters(train_trial, base=self.base), resources)
            self._open_parent_run(tracking_uri)
        except BaseException:
            ray.shutdown()
            raise
        assert self.parent is not None
        print(f"study {self.arguments.name}: Tune folder {self.path}; MLflow {self.parent.tracking_uri} "
              f"(parent run {self.parent.parent_run_id})")  # fmt: skip
        return self

    def __exit__(self, *exception: object) -> None:
        ray.shutdown()

    def _check(self) -> str:
        """A new study needs a free folder, a resumed one its saved state; returns the tracking URI."""
        arguments, path = self.arguments, self.path
        saved = storage.read_json_object(storage.join(path, storage.PARENT_RUN_FILE))
        if arguments.resume and saved is None:
            raise StudyInputError(f"--resume: {path} holds no study to resume (no {storage.PARENT_RUN_FILE})")
        if not arguments.resume and (saved is not None or tune.Tuner.can_restore(path)):
            raise StudyInputError(f"--name {arguments.name}: {path} already holds a study; add --resume or pick a name")
        self.parent = StudyRun(**saved) if saved is not None else None
        tracking_uri = self.parent.tracking_uri if self.parent else resolve_tracking_uri(arguments.tracking_uri)
        if self.parent and arguments.tracking_uri and arguments.tracking_uri != tracking_uri:
            print(f"note: --resume logs to the study's own tracking URI {tracking_uri}, not {arguments.tracking_uri}")
        if arguments.resume:
            if not tune.Tuner.can_restore(path):
                raise StudyInputError(f"--resume: {path} has no Tune state to restore")
            # The trials that ran used the saved base config, whatever the presets say today.
            base = storage.read_json_object(storage.join(path, storage.BASE_CONFIG_FILE))
            if base is None:
                raise StudyInputError(f"--resume: {path} has no {storage.BASE_CONFIG_FILE}")
            self.base = base
        else:
            check_dataset(self.base)
        check_tracking_uri(tracking_uri)
        return tracking_uri

    def _open_parent_run(self, tracking_uri: str) -> None:
        if self.parent is not None:
            reopen_study_run(self.parent)
            return
        arguments = saved_arguments(self.arguments)
        self.parent = start_study_run(
            tracking_uri,
            self.kind,
            self.arguments.name,
            self.dataset,
            arguments,
            self.described_space,
            study_question(self.question),
        )
        storage.write_json(storage.join(self.path, storage.PARENT_RUN_FILE), self.parent.to_json())
        storage.write_json(storage.join(self.path, storage.STUDY_FILE), arguments)
        storage.write_json(storage.join(self.path, storage.BASE_CONFIG_FILE), self.base)

    def record_optuna_study(self, stored: StoredStudy) -> None:
        """Where a search's Optuna study is stored: in the study folder and on the parent run."""
        assert self.parent is not None
        optuna_study.record_location(self.path, stored)
        tag_study_run(self.parent, {STORAGE_TAG: hide_password(stored.storage), STUDY_TAG: stored.name})
        print(f"Optuna study {stored.shown}; watch it with: optuna-dashboard {hide_password(stored.storage)}")

    def run_config(self) -> tune.RunConfig:
        """Tune's run config: the study's folder, its MLflow child runs, the live view, retries (none after an error
        that a retry cannot fix) and per trial its latest checkpoint and that of its selected epoch."""
        assert self.parent is not None, "run_config() is for an open study (inside `with Study(...)`)"
        return tune.RunConfig(
            name=self.arguments.name,
            storage_path=self.arguments.storage_path,
            callbacks=[
                MlflowStudyCallback(self.parent, self.base),
                RetryPolicy(self.arguments.name, RETRIES_PER_TRIAL),
            ],
            failure_config=tune.FailureConfig(max_failures=RETRIES_PER_TRIAL),
            # One checkpoint kept by score (the selected epoch's), and Tune never deletes the latest one: a retried
            # or resumed trial continues from the latest, the best model comes from the selected. With num_to_keep,
            # Tune saves its experiment state with every checkpoint, so a killed driver never leaves a state that
            # points at a deleted checkpoint.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=SELECTED_CHECKPOINT, checkpoint_score_order="max"
            ),
            progress_reporter=StudyProgress(self.base),
            verbose=1,
        )

    def restore(self) -> tune.Tuner:
        """The study's Tuner as Tune saved it (space, searcher, scheduler, run config), to continue where it stopped;
        with --resume-errored, failed trials run again."""
        return tune.Tuner.restore(self.path, self.trainable, resume_errored=self.arguments.resume_errored)

    def conclude(self, table_keys: list[str], show_trials: bool = False) -> int:
        """Print the table (rows labelled by `table_keys`, and by trial with `show_trials`), the failures and the best
        config; export the outputs to the study folder and the parent run, with the best trial's model; close the
        parent run. Returns the script's exit status."""
        assert self.parent is not None
        self.records = read_study_folder(self.path)
        ranking = rank(self.dataset, self.records)
        print_summary(self.kind, self.dataset, self.base, ranking, table_keys, show_trials)
        best = ranking.best.best_trial() if ranking.best else None
        outputs = {storage.TRIALS_FILE: trials_frame(self.records).to_csv(index=False)}
        if best is not None:
            outputs[storage.BEST_CONFIG_FILE] = json.dumps(best.config, indent=2, default=str)
        for name, text in outputs.items():
            storage.write_text(storage.join(self.path, name), text)
        unfinished = [record for record in self.records if record.status not in FINISHED_STATUSES]
        stored = optuna_study.recorded_location(self.path)
        if stored is not None and not unfinished:
            check_stored_study(stored, len(self.records))
        race = storage.read_text(storage.join(self.path, storage.RACE_FILE))
        if race is not None:
            # The report reads a race from the parent run, as it reads the trials.
            guarded(
                "race.json was not logged to the parent run",
                log_study_outputs,
                self.parent,
                {storage.RACE_FILE: race},
                {},
            )
        analysis = tune.ExperimentAnalysis(self.path)
        selected = selected_checkpoint(analysis, best)
        report = export_report(self.path, self.parent, selected)
        folders = {storage.REPORT_FOLDER: report} if report else {}
        guarded("the outputs were not logged to the parent run", log_study_outputs, self.parent, outputs, folders)
        model = self.log_model(selected, best) if selected is not None and best is not None else None
        if not self.arguments.keep_checkpoints:
            drop_finished_checkpoints(analysis, keep=selected)
        status = "KILLED" if unfinished else "FINISHED"
        finish_study_run(self.parent, best.trial_id if best else None, best.metrics if best else {}, status=status)
        best_file = storage.join(self.path, storage.BEST_CONFIG_FILE) if best else "(no best config)"
        print(f"\nexported: {best_file}, {storage.join(self.path, storage.TRIALS_FILE)}")
        print(f"MLflow: {self.parent.tracking_uri}, experiment clmlf/{self.kind}/{self.dataset}, "
              f"parent run {self.parent.parent_run_id} ({self.parent.study_name})")  # fmt: skip
        if model:
            print(f"  the best trial's model: {model} (model/README.md says how to load it)")
        if self.parent.tracking_uri.startswith("sqlite:"):
            print(f"  open the UI: mlflow ui --backend-store-uri {self.parent.tracking_uri}")
        print(f"  its training runs: {runs_page(self.parent.tracking_uri, self.parent.experiment_id)}")
        if stored is not None:
            print(f"Optuna: study {stored.shown}; open it with: optuna-dashboard {hide_password(stored.storage)}")
        if unfinished:
            print(
                f"\n{len(unfinished)} trial(s) did not finish (interrupted); continue with: "
                f"python studies/{self.kind}.py --resume --name {self.arguments.name}"
            )
            return 130
        return 0 if best is not None else 1

    def log_model(self, checkpoint: tune.Checkpoint, best: TrialRecord) -> str | None:
        """The best trial's checkpoint of its selected epoch as the model of its child run; returns its URI."""
        assert self.parent is not None

        def log() -> str | None:
            with checkpoint.as_directory() as folder:
                return log_best_model(
                    self.parent, best.trial_id, Path(folder), lambda uri: model_readme(self, best, uri)
                )

        return guarded("the best trial's model was not logged", log)


def selected_checkpoint(analysis: tune.ExperimentAnalysis, best: TrialRecord | None) -> tune.Checkpoint | None:
    """The best trial's checkpoint of the epoch selected on dev (Tune keeps it by SELECTED_CHECKPOINT)."""
    trial = next((trial for trial in analysis.trials if best is not None and trial.trial_id == best.trial_id), None)
    return analysis.get_best_checkpoint(trial, SELECTED_CHECKPOINT, "max") if trial is not None else None


def drop_finished_checkpoints(analysis: tune.ExperimentAnalysis, keep: tune.Checkpoint | None) -> None:
    """Deletes the checkpoints of finished trials but `keep`: they continue nothing, and a paper-sized trial's
    checkpoint is large (best_config.json trains any of them again). Failed trials keep theirs for --resume-errored."""
    for trial in analysis.trials:
        if trial.status != "TERMINATED":
            continue
        # Tune keeps two per trial: the latest and the selected epoch's (run_config).
        for checkpoint in (trial.checkpoint, analysis.get_best_checkpoint(trial, SELECTED_CHECKPOINT, "max")):
            if checkpoint is not None and (keep is None or checkpoint.path != keep.path):
                with contextlib.suppress(FileNotFoundError):
                    checkpoint.filesystem.delete_dir(checkpoint.path)


def check_stored_study(stored: StoredStudy, tune_trials: int) -> None:
    """After a finished search: trials that an interrupted driver asked for and never ran are marked failed, and the
    stored study must hold one trial per Tune trial (besides those a warm start seeded)."""
    unstarted = optuna_study.close_unstarted_trials(stored)
    if unstarted:
        print(f"Optuna: {unstarted} trial(s) asked for by an interrupted driver never ran; marked failed")
    stored_trials = len(optuna_study.run_trials(optuna_study.load(stored))) - unstarted
    if stored_trials != tune_trials:
        print(f"warning: the stored Optuna study {stored.shown} holds {stored_trials} trial(s) of this search, Tune "
              f"ran {tune_trials}", file=sys.stderr)  # fmt: skip


def start_ray(address: str | None) -> None:
    env_vars = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(address="local", runtime_env=runtime_env, include_dashboard=False)


def trial_resources(arguments: argparse.Namespace) -> dict[str, float]:
    """CPUs and GPUs per trial; GPUs default to 1 where the cluster has any. Refuses what no node can hold."""
    gpus = arguments.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    cpus = arguments.cpus_per_trial
    if cpus <= 0 or gpus < 0:
        raise StudyInputError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    fits = any(node["Resources"].get("CPU", 0) >= cpus and node["Resources"].get("GPU", 0) >= gpus for node in nodes)
    if not fits:
        offered = ", ".join(
            f"{node['Resources'].get('CPU', 0):g} CPU/{node['Resources'].get('GPU', 0):g} GPU" for node in nodes
        )
        message = f"--cpus-per-trial {cpus:g} / --gpus-per-trial {gpus:g}: no node offers that (nodes: {offered})"
        if not arguments.address:
            raise StudyInputError(message)
        print(f"warning: {message}; trials wait until the cluster scales up", file=sys.stderr)
    return {"cpu": cpus, "gpu": gpus}


def points_space(points: list[dict[str, Any]]) -> dict[str, Any]:
    """A param space for explicit points, one trial each (with BasicVariantGenerator(points_to_evaluate=points)
    and num_samples=len(points)): each point key as a choice of the values the points give it, since Tune only
    presets keys of its space. A grid search over a `point` key would hide the values in a nested dict, and a
    grid over each key is a product, not a list."""
    keys = list(dict.fromkeys(key for point in points for key in point))
    return {key: tune.choice(list(dict.fromkeys(point.get(key) for point in points))) for key in keys}


def points_tune_config(points: list[dict[str, Any]], max_concurrent: int | None) -> tune.TuneConfig:
    """Tune's config for a study of explicit points, one trial each (space: `points_space(points)`).

    The concurrency limit goes to the generator itself: Tune ignores `TuneConfig(max_concurrent_trials=...)` when the
    search algorithm is a `BasicVariantGenerator` (it only wraps a `Searcher`), and on a shared cluster this limit is
    what keeps a study within its share of GPUs."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return tune.TuneConfig(
        search_alg=BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent or 0),
        num_samples=len(points),
        **TRIAL_PROCESSES,
    )


def guarded(what: str, action, *arguments):
    """Run an export step; a failure is a warning (the study's results are in its folder already)."""
    try:
        return action(*arguments)
    except Exception as error:  # MLflow's store decides what it raises
        print(f"warning: {what}: {type(error).__name__}: {error}", file=sys.stderr)
        return None


def model_readme(study: Study, best: TrialRecord, uri: str) -> str:
    """The README beside the logged model: what it is and how to load it."""
    epoch = int(best.metrics.get("selected/epoch", -1)) + 1
    return f"""# The best model of study {study.arguments.name}

`state.pt` is the trainer's checkpoint of trial {best.trial_id} ({describe_values(best.config or {})}) at epoch
{epoch}, the epoch selected on dev (dev score {best.metrics[RANKING_METRIC]:.4f}): the best seed of the best
configuration by the study's ranking. It holds its full flat config; encoders that were not trained are left out
with a digest of their weights, and the config builds them again when it is loaded.

Download and score it on dev and test (the data set must be where its config, or --data-root, says):

    MLFLOW_TRACKING_URI={study.parent.tracking_uri if study.parent else ""} \\
        mlflow artifacts download --artifact-uri {uri} --dst-path best-model
    python -m clmlf.evaluate best-model

`clmlf.evaluate.evaluate_checkpoint(folder)` does the same from Python.
"""


def export_report(experiment_path: str, study_run: StudyRun, best: tune.Checkpoint | None) -> Path | None:
    """The study report (tracking/report/) with the analyses of the `best` checkpoint in the study folder, or under
    ./reports for remote storage; returns its folder, or None where it could not be written. The analyses' text-only
    counterpart is trained beside the report, not in it: the report folder goes to MLflow, a checkpoint need not."""
    from tracking.report import write_study_report

    local = not storage.is_remote(experiment_path)
    output = Path(experiment_path, storage.REPORT_FOLDER) if local else Path("reports", study_run.study_name)
    try:
        with best.as_directory() if best is not None else contextlib.nullcontext() as checkpoint:
            write_study_report(
                output, tracking_uri=study_run.tracking_uri, parent_run_ids=[study_run.parent_run_id],
                best_checkpoint=Path(checkpoint) if checkpoint else None,
                text_only_dir=output.parent / f"{output.name}-text-only",
            )  # fmt: skip
    except Exception as error:  # the study's results are exported already; a report problem must not hide them
        print(f"warning: the study report was not written: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    return output
