"""The end of a ``grukit tune`` search: best.yaml, the best run (scored once on the test split), trials.csv,
summary.json and the plots (optimisation history, parameter importances, parallel coordinates)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from .errors import TrainingError
from .io import atomic_write, read_json, write_json, write_yaml
from .runs import Run

__all__ = ["finish", "write_plots"]


def finish(study, spec: dict, dims: dict, cls, evaluate: bool = True, seconds: float = 0.0) -> dict[str, Any]:
    """Write the study's outputs into ``spec['out']`` and return its summary."""
    from optuna.trial import TrialState
    out = Path(spec["out"])
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING,
                        TrialState.WAITING)}
    _write_trials_csv(study, out / "trials.csv")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        errors = sorted({t.user_attrs.get("error", "") for t in trials if t.state == TrialState.FAIL} - {""})
        raise TrainingError(f"no trial of study {spec['study']!r} completed ({counts}); "
                            + (f"first error: {errors[0]}" if errors else "run more trials or loosen the pruner"))
    best = study.best_trial
    base = cls.from_dict(spec["base"], source="search.json")
    refit = spec.get("refit") or {}
    best_cfg = base.replace(**best.params, **refit)
    write_yaml(out / "best.yaml", best_cfg.to_dict())
    best_dir = out / best.user_attrs["run_dir"]
    _link(out / "best", best_dir)
    top = int(spec.get("top", 1))
    members = None
    if refit:
        test = _refit(spec["task"], best_cfg, out / "refit", evaluate)
    elif top > 1 and len(done) > 1 and hasattr(_module(spec["task"]), "assemble_config"):
        test, members = _top_ensemble(spec, done, top, out / "top", evaluate)
    else:
        test = _score_once(best_dir, evaluate)
    write_plots(study, out / "plots")
    start = next((t for t in trials if t.user_attrs.get("start")), None)
    summary = {"task": spec["task"], "study": spec["study"], "storage": spec["storage"], "trials": counts,
               "best_trial": best.number, "best_value": best.value, "best_params": best.params,
               "start_trial": None if start is None else start.number,
               "start_value": start.value if start is not None and start.state == TrialState.COMPLETE else None,
               "best_run": str(best_dir), "best_yaml": str(out / "best.yaml"), "test_metrics": test,
               "refit_run": str(out / "refit") if refit else None, "refit": refit,
               "ensemble_run": str(out / "top") if members else None, "ensemble_trials": members,
               "seconds": round(seconds, 1), "searched": [d.describe() for d in dims.values()]}
    write_json(out / "summary.json", summary)
    return summary


def _module(task: str):
    from .tasks import registry
    return registry.get(task).load()


# meta.json entries that differ between runs of one data set with different settings without changing how a
# trained model reads the data (window counts, the series shorter than a window), or that are learnt after
# training (learnt again for the ensemble)
TRAINING_META = frozenset({"n_train_windows", "n_val_windows", "padded_fill", "short_series", "after_fit_pending",
                           "combine", "combine_validation_mase", "interval_scale"})


def _top_ensemble(spec: dict, done: list, top: int, folder: Path, evaluate: bool) -> tuple[dict | None, list[int]]:
    """Average the ``top`` best complete trials (their trained models, no retraining) as one run in ``folder``
    and score it once on the test split; returns its test metrics and the trial numbers it holds.

    A trial whose data state (meta.json, window counts aside) differs from the best trial's (a searched field
    that changes the encoding, such as ``season_length``) is passed over for the next best. The run's config is the
    best trial's as the task assembles it (``assemble_config``: forecasting takes the longest lookback);
    meta.json's ``member_configs`` hold the fields in which each member's setting differs, its ``ensemble_rule``
    is the mean (settings that err differently average better than their median; README), and what the task
    learns from trained members (forecast: the statistical combination's choice, interval calibration) is
    learnt for the ensemble before the test score. A finished ensemble of the same trials is read back, not
    rebuilt."""
    import shutil

    from .runs import load_weights, save_weights, start_run, update_info
    out = Path(spec["out"])
    ranked = sorted(done, key=lambda t: t.value)
    best = Run(out / ranked[0].user_attrs["run_dir"])
    ref = best.meta                                      # the best trial's data state; the others must share it
    kept: list = [(ranked[0], best)]
    for t in ranked[1:]:
        if len(kept) == top:
            break
        r = Run(out / t.user_attrs["run_dir"])
        if all(r.meta.get(k) == ref.get(k) for k in set(r.meta) | set(ref) if k not in TRAINING_META):
            kept.append((t, r))
    numbers = [t.number for t, _ in kept]
    info = folder / "run.json"
    if info.is_file() and read_json(info).get("status") == "trained":
        old = Run(folder).meta.get("assembled_from") or []
        if [a.get("trial") for a in old] == numbers:
            return _score_once(folder, evaluate), numbers
    cfg = _module(spec["task"]).assemble_config([r.config for _, r in kept])
    weights, over = [], []
    for _, r in kept:
        diff = {f: getattr(r.config, f) for f in cfg.field_names()
                if f != "ensemble" and getattr(r.config, f) != getattr(cfg, f)}
        files = r.weight_files()
        weights += files
        over += [diff] * len(files)
    if hasattr(cfg, "ensemble"):
        cfg = cfg.replace(ensemble=len(weights))
    meta = {k: v for k, v in ref.items() if k not in TRAINING_META}
    meta.update(member_configs=over, ensemble_rule="mean", after_fit_pending=True,
                assembled_from=[{"trial": t.number, "value": t.value, "run": t.user_attrs["run_dir"]} for t, _ in kept])
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        start_run(tmp, spec["task"], cfg, meta)
        for i, w in enumerate(weights):
            save_weights(load_weights(w), tmp / ("model.safetensors" if i == 0 else f"model-{i}.safetensors"),
                         metadata={"task": spec["task"], "member": str(i)}, run_dir=tmp)
        update_info(tmp, status="trained")
        if folder.exists():            # an ensemble of other trials (the study grew since): rebuilt from them
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)          # a half-built copy never stays behind
    return _score_once(folder, evaluate), numbers


def _score_once(run_dir: Path, evaluate: bool) -> dict | None:
    """The best run's test metrics: scored now, or read back when an earlier call already scored this run."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        return read_json(metrics)
    from .train import learn_after_fit
    run = Run(run_dir)
    learn_after_fit(run)                   # the trials skipped it: calibration, the forecast combination's choice
    return run.evaluate() if evaluate else None


def _refit(task: str, cfg, run_dir: Path, evaluate: bool) -> dict | None:
    """Train ``cfg`` (the best setting with the search-only fields back at their starting values) into
    ``run_dir`` and return its test metrics (None without ``evaluate``). A finished refit is not trained
    again; an interrupted one resumes from its checkpoints."""
    info = run_dir / "run.json"
    if not (info.is_file() and read_json(info).get("status") == "trained"):
        from .train import fit
        fit(task, cfg.replace(progress=False), out=run_dir, resume=info.is_file(), evaluate=False)
    return _score_once(run_dir, evaluate)


def _link(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
        os.replace(tmp, link)
    except OSError as e:  # no symlinks on this file system: summary.json still names the run
        warnings.warn(f"could not link {link} to {target}: {e}", stacklevel=2)


def _write_trials_csv(study, path: Path) -> None:
    df = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration",
                                       "datetime_start"))
    df = df.drop(columns=[c for c in ("user_attrs_host", "user_attrs_pid") if c in df])
    if "duration" in df:
        df["duration"] = df["duration"].dt.total_seconds().round(2)
    atomic_write(path, df.to_csv(index=False))


def write_plots(study, folder: Path) -> list[Path]:
    """optimisation_history.png, param_importances.png and parallel_coordinate.png (those that can be drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState
    folder.mkdir(parents=True, exist_ok=True)
    n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    written = []
    for name, draw, needs in (("optimization_history", ovm.plot_optimization_history, 1),
                              ("param_importances", ovm.plot_param_importances, 2),
                              ("parallel_coordinate", ovm.plot_parallel_coordinate, 1)):
        if n_done < needs:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")            # optuna marks its matplotlib plots experimental
                ax = draw(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            import io
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            plt.close(fig)
            written.append(atomic_write(folder / f"{name}.png", buf.getvalue()))
        except Exception as e:  # a plot must never lose a finished study
            warnings.warn(f"could not draw {name}: {e}", stacklevel=2)
    return written
