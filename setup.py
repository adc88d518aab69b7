"""Build script: compiles the Cython codec unless TINYLSM_PUREPYTHON=1.

A failed compile fails the install on purpose: silently falling back to the
pure-Python codec would ship the slow path without anyone noticing
(the lesson of msgpack-python #481).  Ask for pure Python explicitly instead.
"""
import os

from setuptools import Extension, setup


def extensions():
    if os.environ.get("TINYLSM_PUREPYTHON", "") not in ("", "0"):
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(
            "tinylsm._codec",
            ["tinylsm/_codec.pyx"],
            include_dirs=["tinylsm"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "tinylsm._map",
            ["tinylsm/_map.pyx"],
            include_dirs=["tinylsm"],
            extra_compile_args=["-O3"],
        ),
    ]
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "embedsignature": True},
    )


setup(ext_modules=extensions())
