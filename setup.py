"""Build prostate-fast's native parts.

Cython or C++? One rule places every kernel:

* **Cython** for plain loops over typed memoryviews (``nogil``, ``prange``), which the compiler
  vectorises at the baseline ISA without help: each ``prostate_fast/**/_<stage>_cy.pyx`` becomes
  an extension of the same dotted name (``prostate_fast/slide/_slide_cy.pyx`` ->
  ``prostate_fast.slide._slide_cy``). No C in verbatim blocks beyond the OpenMP probe.
* **C++** (``csrc/``, namespace ``pf``, every ``csrc/*.cpp`` linked into the single pybind11 module
  ``prostate_fast._native``) for intrinsics or per-ISA code (SSE2 in ``label.cpp``, GCC
  ``target_clones`` in ``tissue.cpp``), classes (the MXNet predictor), or C APIs loaded at run
  time (MXNet's C predict API through ``dlopen``).

Either way the kernel is private and checks nothing: its Python wrapper validates the arrays,
resolves ``n_threads`` and allocates the outputs (``csrc/common.hpp`` states the conventions).

Both kinds are compiled with OpenMP when the compiler supports it. OpenMP is probed by compiling a
tiny program with ``-fopenmp``; a build without it still works but ``built_with_openmp()`` returns
False and the test suite fails loudly. ``-march=native`` is never used: wheels must run on any
x86-64 (or aarch64) machine. Set ``PROSTATE_FAST_NO_OPENMP=1`` to build without OpenMP on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from glob import glob
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def _openmp_flags() -> tuple[list[str], list[str]]:
    """Return (compile_args, link_args) for OpenMP, or two empty lists when unsupported."""
    if os.environ.get("PROSTATE_FAST_NO_OPENMP"):
        return [], []
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    elif sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()[0]
    if shutil.which(cc) is None:
        return candidates[0]  # let the real build report the problem
    src = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\nreturn n>0?0:1;}\n"
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            c = Path(tmp) / "probe.c"
            c.write_text(src)
            cmd = [cc, *cflags, str(c), "-o", str(Path(tmp) / "probe"), *lflags]
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                return cflags, lflags
    print("prostate-fast: WARNING: the compiler has no OpenMP; kernels will run on one thread")
    return [], []


OMP_C, OMP_L = _openmp_flags()
OPT = ["-O3"] if sys.platform != "win32" else ["/O2"]

cython_exts = [
    Extension(
        name=".".join(Path(os.path.relpath(p, HERE)).with_suffix("").parts),
        sources=[os.path.relpath(p, HERE)],
        include_dirs=[np.get_include()],
        extra_compile_args=[*OPT, *OMP_C],
        extra_link_args=OMP_L,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for p in sorted(glob(str(HERE / "prostate_fast" / "**" / "_*_cy.pyx"), recursive=True))
]

native = Pybind11Extension(
    "prostate_fast._native",
    sources=sorted(os.path.relpath(p, HERE) for p in glob(str(HERE / "csrc" / "*.cpp"))),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=[*OPT, *OMP_C],
    extra_link_args=[*OMP_L, *(["-ldl"] if sys.platform.startswith("linux") else [])],
)

setup(
    ext_modules=[
        *cythonize(
            cython_exts,
            language_level=3,
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        ),
        native,
    ],
)
