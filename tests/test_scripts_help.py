"""Every script under examples/ and bench/ answers --help with its usage and exit 0, at once (without data).

examples/m4.py once read "--help" as "no M4 set named" and started a full Hourly training run into runs/m4."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUNNER = r"""
import contextlib, io, json, os, runpy, sys
out = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    sys.path.insert(0, os.path.dirname(path))           # as `python SCRIPT` puts the script's folder first
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
        out[path] = ["no SystemExit", buf.getvalue()[:300]]
    except SystemExit as e:
        out[path] = [e.code or 0, buf.getvalue()[:300]]
    except BaseException as e:  # noqa: BLE001
        out[path] = [repr(e)[:300], buf.getvalue()[:300]]
print(json.dumps(out))
"""


def test_every_example_and_bench_script_answers_help(tmp_path):
    scripts = sorted(str(p) for d in ("examples", "bench") for p in (REPO / d).glob("*.py")
                     if '__name__ == "__main__"' in p.read_text())          # scripts, not their helper modules
    assert len(scripts) >= 10
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, *scripts], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = {Path(p).name: r for p, r in result.items() if r[0] != 0 or "usage" not in r[1].lower()}
    assert not bad, bad
    assert not (tmp_path / "runs").exists()                   # --help trained nothing
