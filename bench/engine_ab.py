"""bench/engine.py's grid at two checkouts, alternating processes: ``--rounds`` rounds, each one run of
``bench/engine.py`` in OLD and one in this checkout (order alternating), then per cell the median of grukit's
timing over the rounds and the ratio new/old (>1: slower now). Inference and streaming are microseconds per step
(lower is better), training steps per second (so its ratio is old/new).

    python bench/engine_ab.py OLD_CHECKOUT --rounds 2 --threads 1 [--clock cpu] [--out table.txt]

``--clock cpu`` times with the process's CPU time instead of the wall clock (``time.perf_counter`` is replaced by
``time.process_time`` in each run): on a machine shared with other jobs this leaves out the time the process
waited for a core. Use it with ``--threads 1`` only (CPU time adds up every thread's).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path


def parse(text: str) -> dict[str, float]:
    """``{section cell: grukit's number}`` from bench/engine.py's tables."""
    out, section, cols = {}, None, None
    for line in text.splitlines():
        if line.startswith(("inference (", "streaming (", "training (")):
            section, cols = line.split()[0], None
            continue
        parts = line.split()
        if section and parts and parts[0] == "B":
            cols = parts
            continue
        if section and cols and len(parts) == len(cols):
            row = dict(zip(cols, parts))
            if section == "inference":
                out[f"inference B={row['B']} H={row['H']} I={row['I']}"] = float(row["grukit"])
            elif section == "streaming":
                for k in ("step", "stream", "stream_np"):
                    out[f"streaming {k} H={row['H']}"] = float(row[k])
            else:
                out[f"training B={row['B']} H={row['H']} (steps/s)"] = float(row["grukit"])
        elif not parts:
            cols = None if section is None else cols
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    here = Path(__file__).resolve().parents[1]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(args.rounds):
        order = [("old", Path(args.old)), ("new", here)]
        for tag, root in (order if r % 2 == 0 else order[::-1]):
            bench_args = ["--threads", str(args.threads), "--repeats", str(args.repeats)]
            script = str(here / "bench" / "engine.py")
            if args.clock == "cpu":
                cmd = [sys.executable, "-c", "import runpy, sys, time; time.perf_counter = time.process_time; "
                       f"sys.argv = {[script, *bench_args]!r}; runpy.run_path({script!r}, run_name='__main__')"]
            else:
                cmd = [sys.executable, script, *bench_args]
            res = subprocess.run(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                                 text=True, check=True)
            runs[tag].append(parse(res.stdout))
            print(f"round {r} {tag} done", file=sys.stderr, flush=True)
    lines = [f"{'cell':<40} {'old':>10} {'new':>10} {'ratio':>7}   ratio: new time / old time (training: old/new "
             f"steps/s); medians of {args.rounds} alternating runs, {args.threads} thread(s), {args.clock} clock"]
    worst = []
    for k in runs["old"][0]:
        a = statistics.median(r[k] for r in runs["old"] if k in r)
        b = statistics.median(r[k] for r in runs["new"] if k in r)
        ratio = a / b if k.startswith("training") else b / a
        worst.append((ratio, k))
        lines.append(f"{k:<40} {a:>10.3f} {b:>10.3f} {ratio:>7.3f}")
    worst.sort(reverse=True)
    lines.append("worst: " + ", ".join(f"{k} {r:.3f}" for r, k in worst[:5]))
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
