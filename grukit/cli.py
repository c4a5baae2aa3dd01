"""The grukit command line (typer). Heavy imports (torch, lightning) happen inside commands.

Errors grukit raises on purpose (:class:`grukit.errors.GrukitError`), usage errors and disk errors (``OSError``:
full, read-only) print one line and exit
with code 2; ``--debug`` anywhere on the command line shows the traceback instead.

``grukit train <task>`` has one sub-command per registered task (:mod:`grukit.tasks.registry`); its options
are generated from the task's config dataclass, so a new config field is a new CLI option with no edit here.
"""
from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
import warnings
from pathlib import Path
from typing import Any, Optional

import click
import typer
from typer.core import TyperGroup

from .errors import GrukitError

__all__ = ["app", "main"]

_DEBUG = False


def _clicks() -> list:
    """The click modules whose exceptions the command line may raise: click itself, and the copy of click
    that typer ships from 0.2x on (``typer._click``: its parser raises that copy's ``UsageError``,
    ``BadParameter``, ``Exit``..., which are not click's classes)."""
    mods = [click]
    try:
        from typer import _click
        mods.append(_click)
    except ImportError:
        pass
    return mods


def _caught(name: str) -> tuple[type, ...]:
    """Every click module's exception class ``name`` (``exceptions.NAME``), for one ``except`` clause."""
    return tuple(getattr(m.exceptions, name) for m in _clicks() if hasattr(m.exceptions, name))

# Plain click help (rich_markup_mode=None): option help wraps under its flag at any width (80 columns included)
# and "[default: x]" is printed, not read as rich markup.
app = typer.Typer(name="grukit", add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="GRU sequence models end to end. Six tasks: forecast (multi-horizon forecasting), "
                       "classify (sequence classification), autoencoder (anomaly detection), lm (language "
                       "models, text generation), music (polyphonic music, MIDI generation) and speech "
                       "(CTC speech recognition). Train each with `grukit train TASK`, then evaluate, "
                       "predict, generate, transcribe, export or serve the run.",
                  epilog="Examples:\n\n\b\n  grukit quickstart\n  grukit datasets\n"
                         "  grukit train forecast --data airline --horizon 24\n"
                         "  grukit evaluate runs/forecast\n"
                         "  grukit predict runs/forecast --data airline --out forecast.csv\n"
                         "  grukit train lm --data input.txt --max-minutes 10\n"
                         "  grukit generate runs/lm --prompt 'ROMEO:' --length 300\n"
                         "  grukit transcribe runs/speech clip.wav\n\n"
                         "Add --debug to any command for a traceback on errors. Environment variables: "
                         "see the README's \"Environment\" section.")


# ---------------------------------------------------------------- output helpers
def _console():
    from rich.console import Console
    return Console()


def print_table(metrics: dict[str, dict[str, float]], title: str = "") -> None:
    """Rows: the model and its baselines; columns: metrics (side by side). When the metrics do not fit the
    terminal (80 columns, say) and turning helps, the table is turned: one row per metric, one column per model."""
    from rich.table import Table
    rows = {name: row for name, row in metrics.items() if isinstance(row, dict)}
    cols: list[str] = []
    for row in rows.values():
        cols += [c for c in row if c not in cols]

    def cell(v) -> str:
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    console = _console()
    width = max([5] + [len(n) for n in rows]) + sum(max(len(c), 8) + 3 for c in cols) + 4
    turned = max([6] + [len(c) for c in cols]) + sum(max(len(n), 8) + 3 for n in rows) + 4
    table = Table(title=title or None)
    if width <= console.width or width <= turned:                    # the narrower way when neither fits
        table.add_column("model")
        for c in cols:
            table.add_column(c, justify="right")
        for name, row in rows.items():
            table.add_row(name, *(cell(row.get(c)) for c in cols))
    else:
        table.add_column("metric")
        for name in rows:
            table.add_column(name, justify="right")
        for c in cols:
            table.add_row(c, *(cell(row.get(c)) for row in rows.values()))
    console.print(table)


# ---------------------------------------------------------------- train <task>
class _TaskGroup(TyperGroup):
    """`grukit train` with a one-line error for an unknown task name (with the nearest name)."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            from .errors import nearest
            raise click.UsageError(f"unknown task {args[0]!r}{nearest(args[0], self.commands)}; expected one of "
                                   f"{', '.join(self.commands)}")
        return super().resolve_command(ctx, args)


train_app = typer.Typer(cls=_TaskGroup, no_args_is_help=True, rich_markup_mode=None,
                        help="Train a model for TASK (forecast, classify, autoencoder, lm, music, speech) into a "
                             "run directory; `grukit train TASK --help` lists its options with their defaults.",
                        epilog="Examples:\n\n\b\n  grukit train forecast --data airline --horizon 24\n"
                               "  grukit train classify --data japanese_vowels --bidirectional\n"
                               "  grukit train autoencoder --data kdd_tsad_135 --out runs/ae\n"
                               "  grukit train lm --data input.txt --tokenize char --max-minutes 10\n"
                               "  grukit train music --data bach_chorales --output nade\n"
                               "  grukit train speech --data recordings/ --test-speaker theo")
app.add_typer(train_app, name="train")


def _option_for(f: dataclasses.Field, hint) -> tuple[Any, Any]:
    """(annotation, typer.Option) for a config field; defaults stay None so only given options override."""
    flag = "--" + f.name.replace("_", "-")
    help_text = f"{f.metadata.get('help', '')} [default: {_show(f.default)}]"
    if hint is bool:
        return Optional[bool], typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False)
    if typing.get_origin(hint) is tuple:
        return Optional[str], typer.Option(None, flag, help=help_text + " (comma separated)", show_default=False)
    return Optional[hint], typer.Option(None, flag, help=help_text, show_default=False)


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v)) if v else "(none)"
    return "(none)" if v == "" else str(v)


def _train_command(entry) -> None:
    cfg_cls = entry.config_class()
    hints = typing.get_type_hints(cfg_cls)
    fields = dataclasses.fields(cfg_cls)

    def command(**kw):
        config = kw.pop("config")
        out = kw.pop("out")
        resume = kw.pop("resume")
        no_eval = kw.pop("no_eval")
        from .train import fit
        run = fit(entry.name, config, out=out, resume=resume, evaluate=not no_eval, **kw)
        if run is None:                                  # a DDP rank other than 0: rank 0 reports
            return
        con = _console()
        if not no_eval:
            from .io import read_json
            print_table(read_json(run.path / "metrics.json", "metrics file"), title=f"{entry.name}: held-out metrics")
        con.print(f"run directory: [bold]{run.path}[/bold]  (use it with `grukit evaluate {run.path}` and "
                  f"`grukit predict {run.path} --data ...`)")

    params = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                default=typer.Option(None, "--config", "-c", help="YAML, TOML or JSON file of "
                                                     "options (names as below, without dashes)")),
              inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                default=typer.Option(None, "--out", "-o", help="run directory (default "
                                                     f"runs/{entry.name}, numbered when taken)")),
              inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                default=typer.Option(False, "--resume", help="continue the run in --out from "
                                                     "its last checkpoint")),
              inspect.Parameter("no_eval", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                default=typer.Option(False, "--no-eval", help="skip the held-out evaluation"))]
    for f in fields:
        ann, default = _option_for(f, hints[f.name])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
    command.__signature__ = inspect.Signature(params)
    command.__name__ = f"train_{entry.name}"
    examples = "\n".join(f"  {e}" for e in entry.examples)
    train_app.command(entry.name, help=f"{entry.help}.\n\nEvery option is also a config-file key (the name "
                                       "without dashes); [default: ...] is the value used when it is not given.",
                      epilog=f"Examples:\n\n\b\n{examples}" if examples else None)(command)


def _register_tasks() -> None:
    from .tasks import registry
    for name in registry.names():
        _train_command(registry.get(name))


_register_tasks()
__import__("grukit.cli_tune").cli_tune.register(app)   # `grukit tune TASK` (grukit/cli_tune.py)


# ---------------------------------------------------------------- evaluate / predict
@app.command(epilog="Examples:\n\n  grukit evaluate runs/forecast\n\n"
                    "  grukit evaluate runs/classify --data test.npz")
def evaluate(run: Path = typer.Argument(..., help="run directory written by `grukit train`"),
             data: Optional[str] = typer.Option(None, "--data", help="data to evaluate on (default: the "
                                                "held-out part of the training data)")) -> None:
    """Evaluate a trained run; prints its metrics beside the baselines and writes plots."""
    from .runs import Run
    r = Run(run)
    with _threads(r):
        print_table(r.evaluate(data), title=f"{r.task}: {data or r.config.data}")


def _threads(r):
    """The run's own torch thread count (its config's ``threads``) for a command that uses the run."""
    from .train import torch_threads
    return torch_threads(r.config.threads)


@app.command(epilog="Examples:\n\n  grukit predict runs/forecast --data sales.csv --out forecast.csv\n\n"
                    "  grukit predict runs/forecast --data sales.csv --holdout 24  (back-test: actuals beside the forecast)\n\n"
                    "  grukit predict runs/classify --data new.npz\n\n"
                    "  grukit predict runs/autoencoder --data machine.csv --out scores.csv")
def predict(run: Path = typer.Argument(..., help="run directory written by `grukit train`"),
            data: Optional[str] = typer.Option(None, "--data", help="input file or built-in name (default: the "
                                               "run's training data)"),
            out: Optional[Path] = typer.Option(None, "--out", help="output CSV (default RUN/predictions.csv); a "
                                               "PNG is written beside it"),
            holdout: Optional[int] = typer.Option(None, "--holdout", min=1, help="forecast: start the forecast this "
                                                  "many steps before the end and report the actuals beside it")) -> None:
    """Use a trained run: forecasts (with intervals), class labels or anomaly scores, as CSV (+ PNG)."""
    from .runs import Run
    r = Run(run)
    with _threads(r):
        for p in r.predict(data, out, holdout=holdout):
            _console().print(f"wrote {p}")


@app.command(epilog="Examples:\n\n  grukit generate runs/lm --prompt 'ROMEO:' --length 500 --temperature 0.8\n\n"
                    "  grukit generate runs/lm --top-p 0.9 --seed 1 --out sample.txt\n\n"
                    "  grukit generate runs/music --prompt data:0 --seconds 20 --seed 1 --out song.mid")
def generate(run: Path = typer.Argument(..., help="run directory written by `grukit train`"),
             prompt: Optional[str] = typer.Option(None, "--prompt", help="text that primes the model's state"),
             length: Optional[int] = typer.Option(None, "--length", help="tokens to generate"),
             temperature: Optional[float] = typer.Option(None, "--temperature", help="sampling temperature "
                                                         "(0 = always the most likely token)"),
             top_k: Optional[int] = typer.Option(None, "--top-k", help="sample among the k most likely tokens "
                                                 "(0 = all)"),
             top_p: Optional[float] = typer.Option(None, "--top-p", help="nucleus sampling: smallest set of "
                                                   "tokens with this probability mass (1 = all)"),
             seed: Optional[int] = typer.Option(None, "--seed", help="random seed (same seed, same output)"),
             out: Optional[Path] = typer.Option(None, "--out", help="write to this file instead of streaming "
                                                "to stdout"),
             seconds: Optional[float] = typer.Option(None, "--seconds", help="music: length in seconds instead "
                                                     "of --length frames"),
             primer_frames: Optional[int] = typer.Option(None, "--primer-frames", help="music: frames of the "
                                                         "--prompt MIDI file or data:N piece used as primer")) -> None:
    """Generate from a trained run (text for lm): streamed to stdout as produced, or written to --out."""
    from .runs import Run
    r = Run(run)
    module = r.module()
    if not hasattr(module, "generate_run"):
        raise GrukitError(f"{r.task!r} runs cannot generate; `grukit generate` works with generative tasks "
                          "such as lm")
    options = {k: v for k, v in dict(prompt=prompt, length=length, temperature=temperature, top_k=top_k,
                                     top_p=top_p, seed=seed, out=out, seconds=seconds,
                                     primer_frames=primer_frames).items() if v is not None}
    with _threads(r):
        for p in module.generate_run(r, r.models(), **options) or []:
            click.echo(f"wrote {p}", err=True)


@app.command(epilog="Examples:\n\n  grukit transcribe runs/speech clip.wav other.flac\n\n"
                    "  grukit transcribe runs/speech clip.wav --stream --chunk-ms 100\n\n"
                    "  grukit transcribe runs/speech clip.wav --decoder beam")
def transcribe(run: Path = typer.Argument(..., help="speech run directory written by `grukit train speech`"),
               audio: list[Path] = typer.Argument(..., help="audio files (wav, flac, ogg)"),
               stream: bool = typer.Option(False, "--stream", help="run a unidirectional model frame by frame "
                                           "on audio read in chunks, printing partial transcripts"),
               chunk_ms: float = typer.Option(100.0, "--chunk-ms", help="--stream: audio chunk length (ms)"),
               decoder: Optional[str] = typer.Option(None, "--decoder", help="greedy or beam (default: the "
                                                     "run's)")) -> None:
    """Print the transcript of each audio file; --stream also reports the real-time factor."""
    from .tasks.speech import transcribe_files
    if decoder not in (None, "greedy", "beam"):
        raise click.UsageError(f"--decoder {decoder!r}: expected greedy or beam")

    def partial(path: str, text: str) -> None:
        click.echo(f"  ... {text}", err=True)

    from .runs import Run
    with _threads(Run(run)):
        for r in transcribe_files(run, audio, stream=stream, chunk_ms=chunk_ms, decoder=decoder,
                                  on_partial=partial if stream else None):
            click.echo(f"{r['path']}\t{r['text']}")
            if stream:
                click.echo(f"  real-time factor {r['rtf']:.3f} ({r['seconds']:.2f} s for {r['audio_seconds']:.2f} "
                           "s of audio)", err=True)


# ---------------------------------------------------------------- datasets / quickstart / bench
@app.command(epilog="Example:\n\n  grukit datasets")
def datasets() -> None:
    """List the built-in data sets (shipped by installed packages; nothing is downloaded)."""
    from rich.table import Table
    from .data import builtin
    have = {b.name for b in builtin.available()}
    table = Table(title="built-in data sets (use the name with --data)")
    for c in ("name", "task", "package", "description"):
        table.add_column(c)
    for b in builtin.DATASETS.values():
        table.add_row(b.name if b.name in have else f"[dim]{b.name} (install {b.package})[/dim]", b.task,
                      b.package, b.description)
    _console().print(table)


QUICKSTART = dict(data="airline", lookback=24, horizon=24, backtests=1, hidden_size=32, max_epochs=150,
                  patience=30, val_fraction=0.1, ensemble=2)


@app.command(epilog="Example:\n\n  grukit quickstart --out runs/quickstart")
def quickstart(out: Optional[Path] = typer.Option(None, "--out", help="run directory (default "
                                                  "runs/forecast, numbered when taken)"),
               progress: bool = typer.Option(True, "--progress/--no-progress", help="show the progress bar")) -> None:
    """Train a forecaster on airline passengers (last 24 months held out) and compare it with baselines.

    Prints MAE, RMSE, MASE, sMAPE and interval coverage beside naive, seasonal-naive and ETS forecasts fitted on
    the same history, and writes the forecast plot (about a minute on 2 CPU cores).
    """
    import time
    from .train import fit
    t0 = time.time()
    con = _console()
    con.print("[bold]grukit quickstart[/bold]: GRU forecaster on monthly airline passengers, the last 24 months "
              "held out")
    run = fit("forecast", out=out, progress=progress, **QUICKSTART)
    from .io import read_json
    print_table(read_json(run.path / "metrics.json", "metrics file"), title="airline, last 24 months")
    con.print(f"plot: {run.path / 'plots' / 'forecast.png'}\nrun directory: {run.path}  "
              f"({time.time() - t0:.0f} s)")


@app.command(epilog="Examples:\n\n  grukit export runs/classify --format onnx\n\n"
             "  grukit export runs/forecast --out model.onnx --data airline")
def export(run: Path = typer.Argument(..., help="run directory written by `grukit train`"),
           format: str = typer.Option("onnx", "--format", help="export format (onnx)"),  # noqa: A002
           out: Optional[Path] = typer.Option(None, "--out", help="output file (default RUN/model.onnx)"),
           data: Optional[str] = typer.Option(None, "--data", help="data to verify the export on (default: "
                                              "the run's training data)")) -> None:
    """Export a trained model to ONNX (GRU layers as ONNX GRU operators) and verify it in onnxruntime."""
    if format != "onnx":
        raise GrukitError(f"--format {format!r} is not supported; expected onnx")
    from .export import export_run
    from .runs import open_run
    res = export_run(open_run(run), out, data)
    _console().print(f"wrote {res.path} (onnxruntime matches PyTorch within {res.max_abs_diff:.2g} on "
                     f"{res.checked} input batches)")


@app.command(epilog="Example:\n\n  grukit bench")
def bench() -> None:
    """Engine speed: grukit's GRU against torch.nn.GRU (and onnxruntime where installed)."""
    from . import bench as mod
    result = mod.run(short=True)
    if result is not None:
        if isinstance(result, dict) and all(isinstance(v, dict) for v in result.values()):
            print_table(result, title="bench")
        else:
            _console().print(result)


from .cli_serve import EPILOG as SERVE_EPILOG, serve  # noqa: E402  (issue 19: `grukit serve`)
app.command("serve", epilog=SERVE_EPILOG)(serve)


# ---------------------------------------------------------------- entry point
def show_warnings_once() -> None:
    """Print each warning text once per process: training and the evaluation after it read the same file, and
    Lightning's filter changes reset Python's own once-per-location memory, so a data warning came twice."""
    show, seen = getattr(warnings.showwarning, "shown_once_from", warnings.showwarning), set()

    def once(message, category, filename, lineno, file=None, line=None):
        key = (category, str(message))
        if key not in seen:
            seen.add(key)
            show(message, category, filename, lineno, file, line)
    once.shown_once_from = show                         # a second main() in one process starts afresh
    warnings.showwarning = once


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one-line errors with exit code 2 (``--debug`` for tracebacks)."""
    global _DEBUG
    show_warnings_once()
    args = list(sys.argv[1:] if argv is None else argv)
    _DEBUG = "--debug" in args
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=args, prog_name="grukit", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except _caught("Exit") as e:
        return e.exit_code
    except _caught("NoArgsIsHelpError") as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        return 0
    except _caught("UsageError") as e:
        if _DEBUG:
            raise
        click.echo(f"grukit: error: {e.format_message()}", err=True)
        return 2
    except _caught("Abort"):
        click.echo("aborted", err=True)
        return 1
    except GrukitError as e:
        if _DEBUG:
            raise
        msg = " ".join(str(e).split("\n")[:1]) if "\n" not in str(e) else str(e).replace("\n  - ", "; ")
        click.echo(f"grukit: error: {msg}", err=True)
        return getattr(e, "exit_code", 2)             # 2 for bad input; 128+signal for an interrupted run
    except OSError as e:                              # the disk (full, read-only) or a file that went away
        if _DEBUG:
            raise
        from .io import storage_error
        click.echo(f"grukit: error: {storage_error(e, e.filename or '(a file)')}", err=True)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
