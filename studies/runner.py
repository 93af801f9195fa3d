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
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from ray import tune

from results import optuna_study, storage
from results.comparison import estimate_text, run_summary, top_group_text
from results.optuna_study import STORAGE_TAG, STUDY_TAG, StoredStudy
from results.race import Race
from results.ranking import Ranking, best_config_document, rank
from results.record import RANKING_METRIC, TrialRecord, describe_values, trials_frame
from results.storage import hide_password
from results.tune_folder import read_study_folder, selected_checkpoint
from studies.cli import StudyInputError, check_dataset, saved_arguments, study_question
from studies.failures import RetryPolicy
from studies.live_view import StudyProgress
from studies.summary import print_summary
from studies.trainable import SELECTED_CHECKPOINT, train_trial, trial_dirname
from tracking.failpoints import failpoint
from tracking.mlflow_backlog import (
    MODEL_URI_TOKEN,
    Backlog,
    BacklogBusy,
    BacklogSender,
    backlog_path,
    register,
    replay_command,
    unregister,
    use_short_client_requests,
)
from tracking.mlflow_logging import (
    CONCLUSION_TAG,
    TOP_GROUP_TAG,
    StudyRun,
    check_tracking_uri,
    log_best_model,
    register_best_model,
    reopen_study_run,
    runs_page,
    start_study_run,
    tag_study_run,
)
from tracking.study_callback import MlflowStudyCallback
from tracking.study_reconcile import drop_records_of_unknown_trials, reconcile, tune_trials
from tracking.uri import resolve_tracking_uri

RETRIES_PER_TRIAL = 2
# Passed to every trial's worker process, so that a cluster's nodes use the driver's data and caches.
FORWARDED_VARIABLES = ("CLMLF_CACHE_DIR", "CLMLF_DATA_ROOT", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                       "TORCH_HOME")  # fmt: skip
# Tune settings of every study: trial folders named by trial id, and reused worker processes. A finished trial's
# process runs the next trial, so no new worker imports torch and transformers again, and the feature cache and
# encoder files stay warm.
TRIAL_PROCESSES: dict[str, Any] = {"trial_dirname_creator": trial_dirname, "reuse_actors": True}
FINISHED_STATUSES = ("TERMINATED", "ERROR")
# How long the study's end waits for its MLflow backlog to be sent (it stops waiting at once when the server does not
# answer: what is left waits in the backlog for a replay or a resume).
DRAIN_TIMEOUT_S = 120.0


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
    # What the study logs to MLflow, on disk until sent, and the thread that sends it (tracking/mlflow_backlog.py).
    backlog: Backlog | None = None
    sender: BacklogSender | None = None

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
        # MLflow requests of the driver give up within seconds; what they carried waits in the backlog.
        use_short_client_requests()
        claimed = not self.arguments.resume and self._claim()
        try:
            start_ray(self.arguments.address)
            resources = trial_resources(self.arguments)
            self.trainable = tune.with_resources(tune.with_parameters(train_trial, base=self.base), resources)
            self._open_parent_run(tracking_uri)
            self._open_backlog()
        except BaseException:
            self._close_backlog()
            ray.shutdown()
            if claimed and storage.read_text(storage.join(self.path, storage.PARENT_RUN_FILE)) is None:
                storage.release_claim(self.path)
            raise
        assert self.parent is not None
        print(f"study {self.arguments.name}: Tune folder {self.path}; MLflow {self.parent.shown} "
              f"(parent run {self.parent.parent_run_id})")  # fmt: skip
        return self

    def __exit__(self, *exception: object) -> None:
        self._close_backlog()
        ray.shutdown()

    def _open_backlog(self) -> None:
        """The study's MLflow backlog and its sender. A resumed study first sends what an earlier driver left, less
        the records of trials that Tune no longer has."""
        assert self.parent is not None
        try:
            self.backlog = Backlog(backlog_path(self.path))
        except BacklogBusy as error:
            message = f"--name {self.arguments.name}: {error}; is a driver of this study still running?"
            raise StudyInputError(message) from error
        if self.arguments.resume:
            known = {trial.trial_id for trial in tune_trials(self.path)}
            dropped = drop_records_of_unknown_trials(self.backlog, known)
            if dropped:
                print(f"MLflow: {dropped} unsent record(s) of trials that Tune does not have, or of the earlier "
                      f"driver's end, dropped from {self.backlog.path}")  # fmt: skip
        if len(self.backlog):
            print(f"MLflow: {len(self.backlog)} record(s) that an earlier driver did not send are sent first "
                  f"({self.backlog.path})")  # fmt: skip
        self.sender = BacklogSender(self.backlog, self.parent)
        register(self.backlog, self.sender)
        self.sender.start()

    def _close_backlog(self) -> None:
        """Stop the sender; name what was not sent and how to send it."""
        if self.backlog is None:
            return
        if self.sender is not None:
            self.sender.stop()
        unregister(self.backlog)
        waiting = len(self.backlog)
        if waiting:
            print(f"\nMLflow: {waiting} record(s) of this study were not sent; they wait in {self.backlog.path}. "
                  f"Send them with: {replay_command(self.path)} (a --resume of the study sends them too)",
                  file=sys.stderr)  # fmt: skip
        self.backlog.close()
        self.backlog = self.sender = None

    def settle_mlflow(self) -> bool:
        """At the study's end: send the backlog, then make MLflow agree with the Tune folder (tracking/
        study_reconcile.py) and send that too. Returns whether MLflow now holds everything."""
        assert self.backlog is not None and self.sender is not None and self.parent is not None
        if not self.sender.drain(DRAIN_TIMEOUT_S):
            return False
        try:
            settled = reconcile(self.path, self.parent, self.backlog, driver_goes_on=False)
        except Exception as error:  # the store decides what it raises; the Tune folder holds the study
            print(f"warning: MLflow was not compared with the Tune folder ({type(error).__name__}); "
                  f"{replay_command(self.path)} does it", file=sys.stderr)  # fmt: skip
            return False
        for line in settled.lines():
            print(f"MLflow: {line}")
        return self.sender.drain(DRAIN_TIMEOUT_S)

    def _check(self) -> str:
        """A new study needs a free folder, a resumed one its saved state; returns the tracking URI."""
        arguments, path = self.arguments, self.path
        saved = storage.read_json_object(storage.join(path, storage.PARENT_RUN_FILE))
        if arguments.resume and saved is None:
            raise StudyInputError(f"--resume: {path} holds no study to resume (no {storage.PARENT_RUN_FILE})")
        if not arguments.resume and (saved is not None or tune.Tuner.can_restore(path)):
            raise StudyInputError(f"--name {arguments.name}: {path} already holds a study; add --resume or pick a name")
        self.parent = StudyRun(**saved) if saved is not None else None
        given = resolve_tracking_uri(arguments.tracking_uri)
        if self.parent:
            # The saved URI has its password hidden; the URI given now brings it back where it names the same store.
            if hide_password(given) == self.parent.tracking_uri:
                self.parent = dataclasses.replace(self.parent, tracking_uri=given)
            elif ":***@" in self.parent.tracking_uri:
                raise StudyInputError(
                    f"--resume: the study logs to {self.parent.tracking_uri}; give that URI with its password "
                    "(--tracking-uri or MLFLOW_TRACKING_URI)"
                )
            elif arguments.tracking_uri:
                shown_given = hide_password(given)
                print(f"note: --resume logs to the study's own tracking URI {self.parent.shown}, not {shown_given}")
        tracking_uri = self.parent.tracking_uri if self.parent else given
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

    def _claim(self) -> bool:
        """A new study's folder becomes its own before anything is written there: of two studies started with one
        --name, the second stops here (results/storage.py, claim_folder)."""
        holder = storage.claim_folder(self.path)
        if holder is not None:
            claim = storage.join(self.path, storage.CLAIM_FILE)
            raise StudyInputError(
                f"--name {self.arguments.name}: {self.path} is taken by another study started with that name "
                f"({storage.describe_claim(holder)}); pick another name, or add --resume once it runs (if it was "
                f"stopped before it wrote anything, delete {claim})"
            )
        return True

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
                MlflowStudyCallback(self.parent, self.base, backlog_path(self.path)),
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
        """Print the table (rows labelled by `table_keys`, and by trial with `show_trials`) with each configuration's
        interval and comparison with the best, the top group, the failures and the best config; export the outputs
        to the study folder and the parent run; draw the best model's analyses (the one step here that runs a model)
        and the report that shows them; log and register the best trial's model; close the parent run. Returns the
        script's exit status."""
        assert self.parent is not None
        failpoint("study_end")
        self.settle_mlflow()
        self.records = read_study_folder(self.path)
        ranking = rank(self.dataset, self.records)
        print_summary(self.kind, self.dataset, self.base, ranking, table_keys, show_trials)
        comparison = ranking.comparison
        best = ranking.best.best_trial() if ranking.best else None
        outputs = {
            storage.TRIALS_FILE: trials_frame(self.records).to_csv(index=False),
            storage.COMPARISON_FILE: json.dumps(comparison.to_json(), indent=2) + "\n",
        }
        best_config = best_config_document(ranking)
        # A race's race.json (written by its searcher): its own top group goes into best_config.json, the file itself
        # to the parent run with the study's other outputs.
        race_text = storage.read_text(storage.join(self.path, storage.RACE_FILE))
        race = Race.from_json(json.loads(race_text)) if race_text is not None else None
        if best_config is not None and race is not None and race.finished:
            # The configurations the race kept to its end (its drops are in race.json).
            best_config["race"] = {
                "top_group": [race.configurations[index] for index in race.top_group],
                "ended": race.ended,
                "trials": race.started,
            }
        if best_config is not None:
            outputs[storage.BEST_CONFIG_FILE] = json.dumps(best_config, indent=2, default=str) + "\n"
        for name, text in outputs.items():
            storage.write_text(storage.join(self.path, name), text)
        unfinished = [record for record in self.records if record.status not in FINISHED_STATUSES]
        stored = optuna_study.recorded_location(self.path)
        if stored is not None and not unfinished:
            check_stored_study(stored, len(self.records))
        analysis = tune.ExperimentAnalysis(self.path)
        selected = selected_checkpoint(analysis, best.trial_id) if best is not None else None
        outputs_folder = local_outputs_folder(self.path, self.parent.study_name)
        analysis_folder = outputs_folder / storage.ANALYSIS_FOLDER
        if self.arguments.no_analyses:
            print(f"analysis: not drawn (--no-analyses); draw it with: python -m analyses {self.path}")
            analysis_files = None
        else:
            analysis_files = guarded(
                "the best model's analyses were not drawn", draw_analyses, selected, analysis_folder
            )
        report = export_report(outputs_folder / storage.REPORT_FOLDER, self.parent, analysis_folder, self.path)
        assert self.backlog is not None and self.sender is not None
        folders = {storage.REPORT_FOLDER: str(report)} if report else {}
        files = {storage.ANALYSIS_FOLDER: [str(path) for path in analysis_files]} if analysis_files else {}
        texts = {**outputs, storage.RACE_FILE: race_text} if race_text is not None else outputs
        self.backlog.append("study_outputs", texts=texts, folders=folders, files=files)
        model = self.log_model(selected, best) if selected is not None and best is not None else None
        if not self.arguments.keep_checkpoints:
            drop_finished_checkpoints(analysis, keep=selected)
        status = "KILLED" if unfinished else "FINISHED"
        summary_tags = {CONCLUSION_TAG: comparison.sentence(), TOP_GROUP_TAG: top_group_text(comparison),
                        MLFLOW_RUN_NOTE: comparison.sentence()}  # fmt: skip
        self.backlog.append("study_end", best_trial_id=best.trial_id if best else None,
                            metrics=best.metrics if best else {}, status=status,
                            summary_metrics=run_summary(comparison), summary_tags=summary_tags)  # fmt: skip
        if self.sender.drain(DRAIN_TIMEOUT_S) and model == MODEL_URI_TOKEN and best is not None:
            model = self.sender.model_uri(best.trial_id)
        elif model == MODEL_URI_TOKEN:
            model = None
        # The registry needs the model's run: once MLflow has taken the backlog (a study ended in an outage registers
        # nothing, and says so below).
        registered = self.register_model(model, ranking) if model else None
        best_file = storage.join(self.path, storage.BEST_CONFIG_FILE) if best else "(no best config)"
        print(f"\nexported: {best_file}, {storage.join(self.path, storage.TRIALS_FILE)}")
        print(f"MLflow: {self.parent.shown}, experiment clmlf/{self.kind}/{self.dataset}, "
              f"parent run {self.parent.parent_run_id} ({self.parent.study_name})")  # fmt: skip
        if model:
            print(f"  the best trial's model: {model} (model/README.md says how to load it)")
        if registered:
            print(f"  registered as models:/{registered[0]}/{registered[1]}; score it with: "
                  f"python -m clmlf.evaluate models:/{registered[0]}/{registered[1]}")  # fmt: skip
        if self.parent.tracking_uri.startswith("sqlite:"):
            print(f"  open the UI: mlflow ui --backend-store-uri {self.parent.shown}")
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

    def register_model(self, model_uri: str, ranking: Ranking) -> tuple[str, str] | None:
        """The best trial's logged model as a version of the registered model of this study kind and data set; the
        version's description carries the conclusion, the top group and the best configuration's interval."""
        assert self.parent is not None and ranking.best is not None
        comparison = ranking.comparison
        best = ranking.best.best_trial()
        standing = comparison.best
        assert standing is not None
        description = (
            f"{comparison.sentence()}\n\nTop group (not separated from the best): {top_group_text(comparison)}.\n\n"
            f"This model: trial {best.trial_id} (seed {best.seed}, dev score {best.metrics[RANKING_METRIC]:.4f}), "
            f"the best seed of {standing.label}, whose mean dev score over seeds is "
            f"{estimate_text(standing.estimate, 4)} (mean [95% confidence interval]). Study "
            f"{self.parent.study_name}, parent run {self.parent.parent_run_id}."
        )
        tags = {"clmlf.trial_id": best.trial_id, "clmlf.config_id": ranking.best.config_id,
                "clmlf.dataset": self.dataset, "clmlf.top_group": top_group_text(comparison)}  # fmt: skip
        return guarded("the best model was not registered", register_best_model, self.parent, model_uri, description,
                       tags)  # fmt: skip

    def log_model(self, checkpoint: tune.Checkpoint, best: TrialRecord) -> str | None:
        """The best trial's checkpoint of its selected epoch as the model of its child run; returns its URI (or
        MODEL_URI_TOKEN for a local checkpoint, which goes through the backlog)."""
        assert self.parent is not None and self.backlog is not None
        if not storage.is_remote(self.path):
            readme = model_readme(self, best, MODEL_URI_TOKEN)
            self.backlog.append("study_model", trial_id=best.trial_id, checkpoint=checkpoint.path, readme=readme)
            return MODEL_URI_TOKEN

        def log() -> str | None:
            with checkpoint.as_directory() as folder:
                return log_best_model(
                    self.parent, best.trial_id, Path(folder), lambda uri: model_readme(self, best, uri)
                )

        return guarded("the best trial's model was not logged", log)


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

    MLFLOW_TRACKING_URI={study.parent.shown if study.parent else ""} \\
        mlflow artifacts download --artifact-uri {uri} --dst-path best-model
    python -m clmlf.evaluate best-model

`clmlf.evaluate.evaluate_checkpoint(folder)` does the same from Python.
"""


def local_outputs_folder(experiment_path: str, study_name: str) -> Path:
    """Where a study's report and analyses are written: its own folder, or ./reports/<study> for remote storage."""
    return Path(experiment_path) if not storage.is_remote(experiment_path) else Path("reports", study_name)


def draw_analyses(checkpoint: tune.Checkpoint | None, folder: Path) -> list[Path]:
    """The best model's analyses (analyses/) into `folder`, against a text-only counterpart trained once into
    `folder/text-only`: the report reads the files, it never runs a model."""
    if checkpoint is None:
        return []
    from analyses.study import analyse_best_model

    with checkpoint.as_directory() as local:
        return analyse_best_model(Path(local), folder)


def export_report(output: Path, study_run: StudyRun, analysis_folder: Path, tune_dir: str) -> Path | None:
    """The study report (report/) in `output` from the study's MLflow runs and its Tune folder `tune_dir`, showing
    the analyses in `analysis_folder` where they were drawn; returns its folder, or None where it could not be
    written."""
    from report import write_study_report

    try:
        # The Tune folder too: where MLflow lacks something of a trial, the report says so and uses the folder.
        write_study_report(output, tracking_uri=study_run.tracking_uri, parent_run_ids=[study_run.parent_run_id],
                           tune_dirs=[tune_dir], analysis_dirs=[analysis_folder])  # fmt: skip
    except Exception as error:  # the study's results are exported already; a report problem must not hide them
        print(f"warning: the study report was not written: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    return output
