"""Build script: compiles the Cython modules unless TINYLSM_PUREPYTHON=1.

The switch is parsed by ``tinylsm/_backend.py`` (loaded on its own: the
package is not importable before it is built), the one place that owns it;
this script's ``build_py`` also records whether the build is pure, so that
a pure install runs pure without the variable afterwards.

A failed compile fails the install on purpose: silently falling back to the
pure-Python twins would ship the slow path without anyone noticing (the
lesson of msgpack-python #481).  It ends with one line saying how to install
without a compiler instead.
"""
import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
HEADERS = ["tinylsm/_crc32.h", "tinylsm/_format.h", "tinylsm/_map.h"]
NO_COMPILER_HINT = (
    "tinylsm: compiling its Cython modules failed (see above). To install without a "
    "C compiler, use the pure-Python twins: TINYLSM_PUREPYTHON=1 pip install tinylsm "
    "(or . in a checkout)\n")


def backend_module():
    spec = importlib.util.spec_from_file_location(
        "_tinylsm_backend", os.path.join(HERE, "tinylsm", "_backend.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildExtWithHint(build_ext):
    """``build_ext`` that ends a failed compile with how to do without one."""

    def run(self):
        try:
            super().run()
        except Exception:
            sys.stderr.write(NO_COMPILER_HINT)
            raise


class BuildPyRecorded(build_py):
    """``build_py`` that records whether the build is pure (see
    ``tinylsm/_backend.py``): in the built package, or in the source folder
    for an editable install, which runs from there.  A stale record, left
    in either by an earlier pure build, is removed from a compiled one.
    Other commands (an sdist) leave the source folder's record alone."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            backend.record_build(os.path.join(HERE, "tinylsm"), PURE)
        else:
            backend.record_build(os.path.join(self.build_lib, "tinylsm"), PURE)


class SdistWithoutRecord(sdist):
    """``sdist`` that leaves out the source folder's record of a pure
    (editable) build: the sdist's own builds decide for themselves."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        stale = os.path.join(base_dir, "tinylsm", backend.PURE_RECORD)
        if os.path.exists(stale):
            os.unlink(stale)


def extensions(pure):
    if pure:
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(name, [f"tinylsm/{name.split('.')[1]}.pyx"], include_dirs=["tinylsm"],
                  depends=HEADERS, extra_compile_args=["-O3"])
        for name in ("tinylsm._codec", "tinylsm._map")
    ]
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "embedsignature": True},
    )


backend = backend_module()
PURE = bool(backend.switch(os.environ))
setup(ext_modules=extensions(PURE),
      cmdclass={"build_ext": BuildExtWithHint, "build_py": BuildPyRecorded,
                "sdist": SdistWithoutRecord})
