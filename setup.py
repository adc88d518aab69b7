"""Build script: compiles the Cython modules unless TINYLSM_PUREPYTHON=1.

The switch is parsed by ``tinylsm/_backend.py`` (loaded on its own: the
package is not importable before it is built), the one place that owns it.
A failed compile fails the install on purpose: silently falling back to the
pure-Python twins would ship the slow path without anyone noticing (the
lesson of msgpack-python #481).  Ask for pure Python explicitly instead.
"""
import importlib.util
import os

from setuptools import Extension, setup

HEADERS = ["tinylsm/_crc32.h", "tinylsm/_format.h", "tinylsm/_map.h"]


def backend_switch():
    spec = importlib.util.spec_from_file_location(
        "_tinylsm_backend", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "tinylsm", "_backend.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.switch(os.environ)


def extensions():
    if backend_switch():
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


setup(ext_modules=extensions())
