"""grukit's C kernels under AddressSanitizer and UndefinedBehaviorSanitizer (issue 17).

A child build: the C extension exactly as ``setup.py`` declares it (its sources, include dirs and flags, with the
optimisation level replaced) is compiled with ``-fsanitize=address,undefined -fno-sanitize-recover=undefined
-O1 -g`` into a temporary folder, and ``tests/sanitize_child.py`` runs every C entry point from it in a child
Python with gcc's libasan preloaded (Python is not built with ASan; leaks are not checked, Python keeps memory
by design). Two children run side by side: the AVX2 kernels with the helpers spinning (the default), and the
baseline-ISA kernels with ``GRUKIT_SPIN_US=0`` (helpers sleep at once, so the wake-up path runs). A third, tiny
one reads out of bounds on purpose, to show that a real error does fail the check. Skipped only where gcc or
its sanitizer runtimes are missing.
"""
from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("sanitize_child.py")
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-O1",
            "-g"]
# what the sanitizers print when they find something (UBSan: "file:line:col: runtime error: ...")
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "AddressSanitizer:DEADLYSIGNAL", "ERROR: LeakSanitizer")


def _runtime(gcc: str, lib: str) -> str | None:
    """gcc's copy of a sanitizer runtime (``gcc -print-file-name`` echoes the bare name when it has none)."""
    found = subprocess.run([gcc, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else None


def _setup_extension():
    """The C extension as setup.py declares it: setup.py runs with ``setuptools.setup`` replaced by a recorder."""
    import setuptools
    seen: dict = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: seen.update(kw)
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        setuptools.setup = real
    exts = seen.get("ext_modules") or []
    assert len(exts) == 1, f"setup.py declares {len(exts)} extensions (numpy missing?), this test builds one"
    return exts[0]


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    """``(module name, path of the sanitized .so, libasan)``; the build folder is removed afterwards."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not on PATH: the sanitizer build needs it")
    asan, ubsan = _runtime(gcc, "libasan.so"), _runtime(gcc, "libubsan.so")
    if asan is None or ubsan is None:
        pytest.skip(f"gcc has no {'libasan' if asan is None else 'libubsan'} (install its sanitizer runtime, "
                    "e.g. Debian's libasan8 / libubsan1)")
    ext = _setup_extension()
    folder = tmp_path_factory.mktemp("sanitize")
    so = folder / (ext.name.rsplit(".", 1)[-1] + sysconfig.get_config_var("EXT_SUFFIX"))
    paths = sysconfig.get_paths()
    includes = [paths["include"], paths["platinclude"], *ext.include_dirs]
    flags = [f for f in ext.extra_compile_args if not f.startswith("-O")]       # -O1 from SANITIZE instead
    cmd = [gcc, "-shared", "-fPIC", *flags, *SANITIZE, *(f"-I{d}" for d in dict.fromkeys(includes)),
           *(str(ROOT / s) for s in ext.sources), "-o", str(so), *ext.extra_link_args]
    try:
        built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, f"the sanitizer build failed:\n{' '.join(cmd)}\n{built.stderr[-4000:]}"
        assert b"__asan_" in so.read_bytes() and b"__ubsan_handle_" in so.read_bytes(), \
            "the build carries no ASan/UBSan instrumentation"
        yield ext.name, so, asan
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _child(sanitized, *extra: str, **env: str) -> subprocess.Popen:
    name, so, asan = sanitized
    base = {k: v for k, v in os.environ.items() if k not in ("GRUKIT_CPU_ISA", "GRUKIT_SPIN_US", "GRUKIT_CGRU")}
    pre = base.get("LD_PRELOAD")
    env = {**base, "LD_PRELOAD": asan + (f" {pre}" if pre else ""), "ASAN_OPTIONS": "detect_leaks=0",
           "UBSAN_OPTIONS": "print_stacktrace=1", "PYTHONPATH": os.pathsep.join(
               [str(ROOT), *filter(None, [base.get("PYTHONPATH")])]), **env}
    return subprocess.Popen([sys.executable, str(CHILD), name, str(so), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen, what: str) -> tuple[str, str]:
    try:
        out, err = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"{what}: the sanitized child did not finish in 400 s\n{out[-3000:]}\n{err[-3000:]}")
    return out, err


def test_c_kernels_run_clean_under_asan_and_ubsan(sanitized):
    """Every C entry point, on both ISAs, gives the reference backend's results (and the same bits on any thread
    count) with no ASan or UBSan report."""
    runs = {"default ISA, spinning helpers": _child(sanitized),
            "generic ISA, sleeping helpers": _child(sanitized, GRUKIT_CPU_ISA="generic", GRUKIT_SPIN_US="0")}
    for what, p in runs.items():
        out, err = _finish(p, what)
        found = [r for r in REPORTS if r in err]
        assert not found, f"{what}: the sanitizers report {found}:\n{err[-8000:]}"
        assert p.returncode == 0 and "sanitize-child: ok" in out, \
            f"{what}: exit {p.returncode}\n{out[-4000:]}\n{err[-4000:]}"
        if what.startswith("generic"):
            assert "isa=generic" in out, out


def test_sanitized_build_reports_an_out_of_bounds_read(sanitized):
    """The check can fail: a deliberate read past an array (Plan.run trusts the address it is given) ends the
    child with AddressSanitizer's heap-buffer-overflow report, inside the kernels."""
    out, err = _finish(_child(sanitized, "overflow"), "overflow")
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in err, f"{out[-2000:]}\n{err[-4000:]}"
    assert re.search(r"(_cgru|cgru_\w+)\.[ch]:", err), err[-4000:]                # -g: the report names the source
    assert "unnoticed" not in out
