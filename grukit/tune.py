"""``grukit tune``: hyperparameter search for any registered task with Optuna, on a real study database.

Every trial is a normal run directory made by :func:`grukit.train.fit` (``STUDY/trials/NNNN``), trained on
the training split and scored on the validation split only: the objective is the best value of the task's
monitored validation metric (``val_loss`` for most tasks). A task may validate a setting over several folds
(its ``validation_folds(config)``: forecasting's rolling origins, ``val_origins``): the trial then trains one
run per fold (``NNNN``, ``NNNN-fold1``, ...) and its objective is the mean of their best values. TPE samples
the next setting; a median (or Hyperband) pruner stops weak trials from their per-epoch validation values
through :class:`grukit.tune_callbacks.TrialPruning`. The test split is scored once, for the best trial, at the end.

The study lives in a database: SQLite beside the trials by default (``STUDY/study.db``), or any Optuna (SQLAlchemy)
storage URL such as ``postgresql://user@host/db``, which lets processes on several machines share one study.
A search that is stopped (Ctrl-C, SIGKILL, a crash) resumes when the same command is run again: ``trials``
counts the finished (complete or pruned) trials of the whole study, a trial whose process died is marked
failed and its setting is tried again (at once for a dead process on this machine, after the heartbeat's grace
period for one elsewhere), and no trial number is reused.

Output in the study directory: ``best.yaml`` (``grukit train TASK -c best.yaml`` retrains the best setting),
``best`` (a link to the best trial's run directory, with its test ``metrics.json``), ``trials.csv``,
``summary.json`` and ``plots/`` (optimisation history, parameter importances, parallel coordinates).
Where the search fixed a field only so that trials could be scored or be cheap (the config class's
``tune_refit``: classify's ``schedule=validated``, one model with a validation split, fixed by default; a
``tune:`` section's ``ensemble`` or ``max_minutes``), the best setting is trained again at the end with those
fields back at the starting configuration's values (``refit/``: for classify by default the ensemble on all
training series, as scikit-learn's searches refit the best parameters on the whole training set); that run is
the one scored on test, and ``best.yaml`` is its configuration.

Example::

    summary = grukit.tune.tune("forecast", data="airline", trials=30, timeout="20m")
    summary["best_params"], summary["test_metrics"]
"""
from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .config import TaskConfig
from .errors import ConfigError, DataError, GrukitError, Interrupted, TrainingError
from .io import read_json, write_json
from .runs import update_info
from .train import remove_checkpoints, resolve_config
from .tune_space import Dim, read_tune_section, start_params, task_space

__all__ = ["tune", "parse_duration", "default_study_name"]

SPEC_FILE = "search.json"
HEARTBEAT_S, GRACE_S = 10, 60


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from ``90``, ``90s``, ``30m``, ``2h`` or ``1h30m`` (None stays None)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*[hms]", "", s).strip():
        raise ConfigError(f"--timeout {text!r}: expected a duration such as 90s, 30m, 2h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def default_study_name(task: str, data: str) -> str:
    stem = Path(str(data).rstrip("/")).stem or "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{task}-{stem}")


def tune(task: str, config: TaskConfig | str | Path | dict | None = None, *, data: str | None = None,
         trials: int = 20, timeout: str | float | None = None, storage: str | None = None,
         study: str | None = None, n_jobs: int = 1, out: str | Path | None = None, pruner: str = "median",
         seed: int = 0, space: dict[str, Any] | None = None, evaluate: bool = True, verbose: bool = True,
         start: bool = True, top: int = 10, **overrides) -> dict[str, Any]:
    """Search ``task``'s hyperparameters on the validation split and return the study summary.

    Args:
        config: the starting configuration (dataclass, config file or dict); a config file's ``tune:`` section
            overrides the task's default search space. ``overrides`` are config fields fixed for every trial.
        trials: finished (complete or pruned) trials the study should hold; a resumed study runs the rest.
        timeout: stop starting trials after this long (seconds or ``30m``/``2h``).
        storage: an Optuna storage URL (default ``sqlite:///OUT/study.db``); study: its name in the storage.
        n_jobs: processes sharing the study on this machine (each trial trains with its config's ``threads``,
            1 by default; with ``threads=0`` the machine's cores are split between the processes).
        out: the study directory (default ``runs/tune/STUDY``); pruner: ``median``, ``hyperband`` or ``none``.
        space: search-space overrides (same form as the ``tune:`` section), applied after the config file's.
        evaluate: score the best trial on the test split at the end (once).
        start: a new study's first trial is the starting configuration (the task's defaults, or the config
            file's and ``overrides``' values) wherever the space holds its value, so the search's best is never
            worse on validation than the configuration it started from; the sampler picks the others.
        top: for a task that can average runs of different settings (forecasting: ``assemble_config``) and has
            no refit, the final model is the mean of the ``top`` best complete trials' models (``STUDY/top``,
            no retraining), and that is what the test split scores; 1: the best trial alone. On the four built-in
            single series the 10 best averaged beat the best trial alone and the defaults (README).

    Returns a dict: study, storage, trials (complete/pruned/failed/running counts), best_trial, best_value,
    best_params, best_run, best_yaml, test_metrics (the final model's: the refit, the top-trials ensemble or the best
    trial), ensemble_run and ensemble_trials (the averaged trials, where there is one), seconds.
    """
    _need_optuna()
    from .tasks import registry
    cls = registry.get(task).config_class()
    base = resolve_config(task, config, data=data, **overrides)
    if not base.data:
        raise ConfigError(f"no data: pass --data PATH or a built-in name to `grukit tune {task}`")
    if trials < 1 or n_jobs < 1 or top < 1:
        raise ConfigError(f"--trials {trials}, --n-jobs {n_jobs}, --top {top}: each must be >= 1")
    if pruner not in ("median", "hyperband", "none"):
        raise ConfigError(f"--pruner {pruner!r}: expected median, hyperband or none")
    tune_over = dict(read_tune_section(config)) if isinstance(config, (str, Path)) else {}
    tune_over.update(space or {})
    dims = task_space(cls, tune_over, base, source=str(config) if tune_over and not space else "tune")
    fixed = {d.name: d.value for d in dims.values() if d.kind == "fixed"}
    refit = {n: getattr(base, n) for n in cls.tune_refit if n in fixed and fixed[n] != getattr(base, n)}
    base = base.replace(**fixed)
    folds = _validation_folds(task, base)                # a bad val_origins fails here, before anything is written
    study = study or default_study_name(task, base.data)
    out = Path(out) if out is not None else Path("runs") / "tune" / study
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    spec = dict(task=task, base=base.to_dict(), space=tune_over, storage=storage, study=study, pruner=pruner,
                seed=seed, trials=trials, timeout=parse_duration(timeout), n_jobs=n_jobs, out=str(out.resolve()),
                verbose=verbose, folds=folds, refit=refit, top=top)
    write_json(out / SPEC_FILE, spec)
    t0 = time.time()
    opened = _open_study(spec, rank=0)                    # creates the study before any worker starts
    _reclaim_dead_trials(*opened)
    first = start_params(dims, base) if start and not opened[0].trials else {}
    if first:                                             # a new study: trial 0 is the starting configuration
        opened[0].enqueue_trial(first, user_attrs={"start": True})
    if verbose:
        _say(f"study {study!r} in {storage}: {_finished(opened[0])} of {trials} trials done; searching "
             + "; ".join(d.describe() for d in dims.values() if d.kind != "fixed"))
        if len(folds) > 1:
            _say(f"each trial trains {len(folds)} rolling-origin validation folds (training data ending "
                 f"{', '.join(map(str, folds))} points earlier); the objective is their mean validation value")
    workers = [subprocess.Popen([sys.executable, "-m", "grukit.tune", str(out / SPEC_FILE), str(rank)])
               for rank in range(1, n_jobs)]
    try:
        _search(spec, rank=0, opened=opened)
    except Interrupted as e:
        raise Interrupted(f"search stopped ({_finished(opened[0])} of {trials} trials done; the interrupted "
                          f"trial's setting is queued again): run the same command to resume study {study!r}",
                          exit_code=e.exit_code) from None
    finally:
        codes = [w.wait() for w in workers]
    if any(codes):
        raise TrainingError(f"{sum(1 for c in codes if c)} of {n_jobs - 1} worker processes failed (exit codes "
                            f"{codes}); run the same command again to resume the study")
    from .tune_report import finish
    return finish(opened[0], spec, dims, cls, evaluate=evaluate, seconds=time.time() - t0)


# ---------------------------------------------------------------- one search process
def _validation_folds(task: str, base: TaskConfig) -> list[int]:
    """The ``fold_shift`` of each validation fold a trial trains (the task's ``validation_folds``; ``[0]``, the
    normal split only, for tasks without rolling-origin folds)."""
    from .tasks import registry
    plan = getattr(registry.get(task).load(), "validation_folds", None)
    return [int(f) for f in plan(base)] if plan is not None else [0]


def _need_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError("grukit tune needs optuna: pip install 'grukit[all]' (or pip install optuna)") from None


def _open_study(spec: dict, rank: int):
    """(study, storage, retry callback) for ``spec``; the same call in every worker process."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage
    try:                                                  # optuna >= 4.9
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
        callback_arg = "heartbeat_stale_trial_callback"
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback as Retry
        callback_arg = "failed_trial_callback"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    retry = Retry(max_retry=2)
    url = spec["storage"]
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    for attempt in range(3):                             # processes starting together race to create tables
        try:
            storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                 grace_period=GRACE_S, **{callback_arg: retry})
            break
        except Exception as e:  # bad URL, missing driver, unreachable server
            racing = type(e).__name__ in ("IntegrityError", "OperationalError") or "already exists" in str(e)
            if attempt == 2 or not racing:
                raise ConfigError(f"--storage {url!r}: cannot open the study database: "
                                  f"{str(e).splitlines()[0]}") from e
            time.sleep(0.5 + attempt)
    trials, pruner_name = int(spec["trials"]), spec["pruner"]
    sampler = optuna.samplers.TPESampler(seed=int(spec["seed"]) + rank, n_startup_trials=max(3, min(10, trials // 4)),
                                         constant_liar=spec["n_jobs"] > 1)
    max_epochs = int(spec["base"].get("max_epochs", 50))
    steps = max_epochs * len(spec.get("folds", [0]))      # fold j's epoch e is reported as step j * max_epochs + e
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3,
                                                            n_warmup_steps=warmup_epochs(max_epochs)),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=min(3, max_epochs),
                                                                  max_resource=steps),
              "none": optuna.pruners.NopPruner}[pruner_name]()
    study = optuna.create_study(storage=storage, study_name=spec["study"], direction="minimize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    return study, storage, retry


def warmup_epochs(max_epochs: int) -> int:
    """Epochs of a run (of each fold) the median pruner never prunes."""
    return min(5, max_epochs // 4)


def _finished(study) -> int:
    from optuna.trial import TrialState
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{int(pid)}/stat")
    try:                                                  # a zombie (killed, not yet reaped) is dead
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _reclaim_dead_trials(study, storage, retry) -> int:
    """Fail the running trials whose process on this machine is gone, and queue their settings again.

    Other machines' dead trials are failed by Optuna's heartbeat check after ``GRACE_S`` seconds.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState
    host, n = socket.gethostname(), 0
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host or _alive(t.user_attrs.get("pid")):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, "error", "its process died")
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:                  # another process reclaimed it first
            continue
        retry(study, storage.get_trial(trial_id))
        n += 1
    return n


def _search(spec: dict, rank: int, opened=None) -> None:
    """Run trials until the study holds ``spec['trials']`` finished ones or the timeout passes."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from .tasks import registry
    study, storage, retry = opened or _open_study(spec, rank)
    if rank:
        _reclaim_dead_trials(study, storage, retry)
    if spec["n_jobs"] > 1:                # the count a trial keeps when its config says threads=0
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec["n_jobs"]))
    cls = registry.get(spec["task"]).config_class()
    base = cls.from_dict(spec["base"], source=SPEC_FILE)
    dims = task_space(cls, spec["space"])
    if _finished(study) >= spec["trials"]:
        return
    objective = _Objective(spec, base, dims, study)
    callbacks = [MaxTrialsCallback(spec["trials"], states=(TrialState.COMPLETE, TrialState.PRUNED)),
                 _StopOnErrors(spec["trials"])]
    if spec.get("verbose", True):
        callbacks.append(_progress_line)
    study.optimize(objective, timeout=spec["timeout"], callbacks=callbacks,
                   catch=(DataError, ConfigError, TrainingError))


class _Objective:
    """One trial: sample a setting, train it into a run directory, return its best validation value."""

    def __init__(self, spec: dict, base: TaskConfig, dims: dict[str, Dim], study):
        self.spec, self.base, self.dims, self.study = spec, base, dims, study
        self.out = Path(spec["out"])

    def __call__(self, trial) -> float:
        # pid before host: another process's _reclaim_dead_trials fails a running trial of this host whose pid
        # is gone, and between the two writes a trial with a host and no pid yet looked dead (seen once, under
        # load: "Cannot tell a FAIL trial" when the trial ended; the likely cause of that one failure)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        if "error" in trial.user_attrs:                   # a retried setting carries its dead trial's attributes
            trial.set_user_attr("error", "")
        params = {name: d.suggest(trial) for name, d in self.dims.items() if d.kind != "fixed"}
        trial.set_user_attr("run_dir", f"trials/{trial.number:04d}")
        folds, values, t0 = self.spec.get("folds", [0]), [], time.time()
        try:
            for j, shift in enumerate(folds):              # the normal split first, then the earlier folds
                cfg = self.base.replace(**params, progress=False,
                                        **({"fold_shift": self.base.fold_shift + shift} if shift else {}))
                values.append(self._fold(trial, cfg, j, values))
                if len(folds) > 1:
                    trial.set_user_attr("fold_values", [round(v, 6) for v in values])
        finally:
            trial.set_user_attr("seconds", round(time.time() - t0, 2))
        return sum(values) / len(values)

    def _fold(self, trial, cfg: TaskConfig, j: int, prior: list[float]) -> float:
        """Train fold ``j`` (0: the normal split, in ``trials/NNNN``; j > 0 in ``trials/NNNN-foldJ``) and return
        its best validation value; its per-epoch values reach the pruner averaged with the earlier folds'."""
        import optuna
        from .train import fit
        from .tune_callbacks import TrialPruning
        run_dir = self.out / (f"trials/{trial.number:04d}" + (f"-fold{j}" if j else ""))
        prune = TrialPruning(trial, step_offset=j * int(cfg.max_epochs), prior=prior,
                             warmup=warmup_epochs(int(cfg.max_epochs)) if j else 0)
        try:
            fit(self.spec["task"], cfg, out=run_dir, evaluate=False, callbacks=[prune], after_fit=False)
        except optuna.TrialPruned:
            _mark(run_dir, "pruned")
            trial.set_user_attr("pruned_at", f"epoch {prune.pruned_at}" + (f" of fold {j}" if j else ""))
            raise
        except Interrupted:                               # Ctrl-C/SIGTERM: this setting is tried again on resume
            self.study.enqueue_trial(trial.params, user_attrs={"start": True} if trial.user_attrs.get("start")
                                     else None, skip_if_exists=False)
            raise
        except GrukitError as e:
            trial.set_user_attr("error", str(e).splitlines()[0][:300])
            raise
        finally:
            before = trial.user_attrs.get("epochs", 0) if j else 0     # epochs of every fold so far
            trial.set_user_attr("epochs", before + prune.epochs)
            remove_checkpoints(run_dir)                   # the trained weights stay in model.safetensors
        if not math.isfinite(prune.best):
            no_val = (run_dir / "meta.json").is_file() and not read_json(run_dir / "meta.json").get("has_val", True)
            if no_val and j:       # this setting (a longer lookback) leaves an earlier fold no validation windows
                _mark(run_dir, "pruned")
                trial.set_user_attr("pruned_at", f"fold {j}: no validation windows left with this setting "
                                                 "(the series ends earlier there)")
                raise optuna.TrialPruned(f"fold {j} has no validation windows with this setting")
            why = (" (the run had no validation split: set val_fraction > 0, or for classify schedule=validated)"
                   if no_val else "")
            fold = f" fold {j}" if j else ""
            raise TrainingError(f"trial {trial.number}{fold}: no finite validation value was reported{why}")
        return prune.best


def _mark(run_dir: Path, status: str) -> None:
    if (run_dir / "run.json").is_file():
        update_info(run_dir, status=status)              # the one run.json updater (shape check, manifest)


class _StopOnErrors:
    """Stop the search when the last few trials all failed on an error (bad data for every setting must not
    loop until the trial budget is spent)."""

    def __init__(self, trials: int):
        self.window = max(3, min(10, trials))

    def __call__(self, study, frozen) -> None:
        from optuna.trial import TrialState
        ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()][-self.window:]
        if len(ended) == self.window and all(t.state == TrialState.FAIL and t.user_attrs.get("error") not in
                                             (None, "", "its process died") for t in ended):
            _say(f"stopping: the last {self.window} trials failed; first error: {ended[0].user_attrs['error']}")
            study.stop()


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.5g}" if isinstance(v, float) else str(v)


def _progress_line(study, frozen) -> None:
    """One line per finished trial: number, state, value, best so far, time, setting."""
    from optuna.trial import TrialState
    try:
        best = study.best_trial
        best_txt = f"best {_fmt(best.value)} (#{best.number})"
    except ValueError:
        best_txt = "best -"
    state = frozen.state.name.lower()
    extra = ""
    if frozen.state == TrialState.PRUNED:
        last = max(frozen.intermediate_values) if frozen.intermediate_values else 0
        extra = f" at {frozen.user_attrs.get('pruned_at', f'step {last}')}"
    elif frozen.state == TrialState.FAIL:
        extra = f": {frozen.user_attrs.get('error', 'failed')}"
    value = frozen.value if frozen.state == TrialState.COMPLETE else (
        min(frozen.intermediate_values.values()) if frozen.intermediate_values else None)
    params = " ".join(f"{k}={_fmt(v)}" for k, v in frozen.params.items())
    if frozen.user_attrs.get("fold_values"):
        extra += " (folds " + "/".join(_fmt(float(v)) for v in frozen.user_attrs["fold_values"]) + ")"
    if frozen.user_attrs.get("start"):
        extra += " (the starting configuration)"
    _say(f"trial {frozen.number:>4}  {state:<8}{extra}  value {_fmt(value)}  {best_txt}  "
         f"{frozen.user_attrs.get('seconds', 0):.1f}s  {params}")


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":                                # a worker process of tune(n_jobs=K)
    spec_path, rank_arg = sys.argv[1], int(sys.argv[2])
    try:
        _search(read_json(spec_path), rank=rank_arg)
    except GrukitError as err:
        print(f"grukit tune worker {rank_arg}: error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
