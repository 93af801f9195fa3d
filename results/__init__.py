"""The results of studies, read back: one trial record whichever store it comes from, the readers of a study's
Tune folder (`tune_folder`) and of its MLflow runs (`mlflow_runs`), and the ranking of configurations with the
summary table (`ranking`). The study scripts, `studies/confirm.py` and the report all read results here.

- `record`: the trial record, the metric names and the rules that decide whether a trial counts.
- `ranking`: configurations (trials that differ only in the seed), the one ranking rule, the summary table and
  best_config.json's content.
- `statistics`: Student-t intervals, paired t-tests, Holm's correction and the top group (scipy's distributions).
- `comparison`: each configuration's interval and comparison with the best, the top group, and the one sentence
  that says how sure a study is.
- `tune_folder`: trials from a study's Tune folder through Ray's `ExperimentAnalysis`.
- `mlflow_runs`: trials from the child runs of study parent runs or from whole experiments.
"""
