"""``Buffer``: the type of every key and value tinylsm accepts.

Every method takes a key or value by one rule (see ``_format.as_bytes``):
any object with the buffer protocol, as its raw bytes.  ``bytes``,
``bytearray`` and ``memoryview`` are the usual ones; ``array.array``,
``mmap.mmap`` and NumPy arrays are accepted as well.  ``Buffer`` says
exactly that to a type checker: it is the buffer protocol of PEP 688,
``collections.abc.Buffer`` from Python 3.12, and for older targets its
backport ``typing_extensions.Buffer``, which type checkers know without
``typing_extensions`` being installed (it is only imported while type
checking).  A ``str`` is not a buffer, as at run time.

At run time before 3.12 (where the protocol does not exist) ``Buffer`` is
``Union[bytes, bytearray, memoryview]``, a stand-in for annotations only:
it is not meant for ``isinstance``.
"""
import sys
from typing import TYPE_CHECKING, Union

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
elif TYPE_CHECKING:
    from typing_extensions import Buffer
else:
    Buffer = Union[bytes, bytearray, memoryview]

__all__ = ["Buffer"]
