"""Build step for grukit's one compiled part: the float32 GRU kernels (``grukit/nn/backends/_fused/``, C sources listed in ``SOURCES``).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found the build goes
on without it and grukit runs its numba kernels instead (``grukit.nn.backends.fused_cpu.cgru_status()`` says
which). The source picks AVX2 + FMA or baseline code at import time, so a build runs on any x86-64 CPU.
"""
from setuptools import Extension, setup

try:                                     # the stream's frame call makes numpy arrays through numpy's C API
    import numpy
except ImportError:                      # (pyproject's build requirements bring it; without it: numba kernels)
    numpy = None

FUSED = "grukit/nn/backends/_fused"
# the module (Python functions, constants, layouts), the Stream and Plan types, the thread team, the kernels
SOURCES = ["_cgru.c", "cgru_stream.c", "cgru_plan.c", "cgru_team.c", "cgru_kernels.c"]
# the shared layouts and constants; the kernels (matmuls, gates, recurrence) compiled twice by cgru_kernels.c
HEADERS = ["cgru.h", "cgru_gemm.h", "cgru_gates.h", "cgru_recur.h"]

setup(
    ext_modules=[] if numpy is None else [
        Extension(
            "grukit.nn.backends._fused._cgru",
            sources=[f"{FUSED}/{name}" for name in SOURCES],
            depends=[f"{FUSED}/{name}" for name in HEADERS],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O3", "-std=gnu11", "-fno-math-errno", "-Wall", "-Wno-unused-function", "-Wno-psabi"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    ],
)
