"""Build step for grukit's one compiled part: the float32 GRU kernels (``grukit/nn/backends/_fused/_cgru.c``).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found the build goes
on without it and grukit runs its numba kernels instead (``grukit.nn.backends.fused_cpu.cgru_status()`` says
which). The source picks AVX2 + FMA or baseline code at import time, so a build runs on any x86-64 CPU.
"""
from setuptools import Extension, setup

try:                                     # the stream's frame call makes numpy arrays through numpy's C API
    import numpy
except ImportError:                      # (pyproject's build requirements bring it; without it: numba kernels)
    numpy = None

setup(
    ext_modules=[] if numpy is None else [
        Extension(
            "grukit.nn.backends._fused._cgru",
            sources=["grukit/nn/backends/_fused/_cgru.c"],
            depends=["grukit/nn/backends/_fused/cgru_impl.h"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O3", "-std=gnu11", "-fno-math-errno", "-Wall", "-Wno-unused-function", "-Wno-psabi"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    ],
)
