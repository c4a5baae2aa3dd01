"""``grukit tune TASK``: the command line of :func:`grukit.tune.tune` (registered by :mod:`grukit.cli`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import ConfigError

__all__ = ["register", "tune_command"]


def _spaces_epilog() -> str:
    from .tasks import registry
    from .tune_space import describe_space
    lines = [f"  {name}: {describe_space(registry.get(name).config_class())}" for name in registry.names()]
    return ("Default search spaces (override per field in the config file's tune: section, e.g.\n\n"
            "  tune: {hidden_size: [32, 64], lr: {low: 1e-4, high: 1e-2, log: true}, batch_size: 32}):\n\n"
            + "\n\n".join(lines)
            + "\n\nExamples:\n\n  grukit tune forecast --data airline --trials 40 --timeout 20m\n\n"
              "  grukit tune classify --data japanese_vowels -c space.yaml --n-jobs 2\n\n"
              "  grukit tune forecast --data sales.csv --set horizon=7 --set id_col=store "
              "--storage postgresql://me@db/studies --study sales\n\n"
              "  grukit train forecast -c runs/tune/forecast-airline/best.yaml  (retrain the best setting)")


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set horizon=12")
        out[key.strip().replace("-", "_")] = value
    return out


def tune_command(
        task: str = typer.Argument(..., help="registered task: forecast, classify, autoencoder, lm, music, speech"),
        data: Optional[str] = typer.Option(None, "--data", help="data file or built-in data set name"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/TOML/JSON config: fixed options, "
                                              "and a tune: section overriding the search space"),
        sets: list[str] = typer.Option([], "--set", help="FIELD=VALUE fixed for every trial (repeatable)"),
        trials: int = typer.Option(20, "--trials", help="finished trials the study should hold (a resumed study "
                                   "runs the rest)"),
        timeout: Optional[str] = typer.Option(None, "--timeout", help="stop starting trials after this long: "
                                              "90s, 30m, 2h"),
        storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite:///"
                                              "OUT/study.db; postgresql://... to share a study across machines)"),
        study: Optional[str] = typer.Option(None, "--study", help="study name (default TASK-DATA)"),
        n_jobs: int = typer.Option(1, "--n-jobs", help="processes sharing the study on this machine"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="study directory (default runs/tune/STUDY)"),
        pruner: str = typer.Option("median", "--pruner", help="median, hyperband or none"),
        seed: int = typer.Option(0, "--seed", help="sampler seed"),
        no_eval: bool = typer.Option(False, "--no-eval", help="do not score the best trial on the test split"),
        top: int = typer.Option(10, "--top", help="forecast: the final model averages the TOP best trials' "
                                "models (STUDY/top, no retraining; 1 = the best trial alone); tasks with a "
                                "refit (classify) train the best setting again instead"),
        start: bool = typer.Option(True, "--start/--no-start", help="a new study's first trial is the starting "
                                   "configuration (defaults, or the config file's values) wherever the space "
                                   "holds its values: the best is never worse on validation than it")) -> None:
    """Search TASK's hyperparameters with Optuna (TPE, pruning) on the validation split; every trial is a run.

    The study is kept in a database, so running the same command again resumes it. At the end the final
    model (forecast: the mean of the --top best trials; classify: the best setting trained again; otherwise the
    best trial) is scored once on the test split, and best.yaml, trials.csv, summary.json and plots/ are written.
    """
    from .tune import tune
    summary = tune(task, config, data=data, trials=trials, timeout=timeout, storage=storage, study=study,
                   n_jobs=n_jobs, out=out, pruner=pruner, seed=seed, evaluate=not no_eval, start=start, top=top,
                   **_parse_sets(sets))
    from rich.console import Console
    con = Console()
    t = summary["trials"]
    con.print(f"best trial #{summary['best_trial']}: value {summary['best_value']:.5g}  "
              f"{summary['best_params']}\n{t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed "
              f"in {summary['seconds']:.0f} s")
    if summary.get("start_value") is not None:
        con.print(f"the starting configuration (trial #{summary['start_trial']}): value "
                  f"{summary['start_value']:.5g}")
    for row, metrics in (summary.get("test_metrics") or {}).items():
        if isinstance(metrics, dict):
            con.print(f"  test {row}: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in metrics.items()))
    if summary.get("ensemble_run"):
        con.print(f"the test rows score the mean of the {len(summary['ensemble_trials'])} best trials "
                  f"({', '.join('#' + str(n) for n in summary['ensemble_trials'])}): "
                  f"[bold]{summary['ensemble_run']}[/bold]")
    con.print(f"best run: [bold]{summary['best_run']}[/bold]\nretrain: grukit train {task} -c {summary['best_yaml']}")


def register(app: typer.Typer) -> None:
    """Add ``grukit tune`` to the main app."""
    app.command("tune", epilog=_spaces_epilog())(tune_command)
