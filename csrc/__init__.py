"""C++ sources of fastair's native backend, shipped as package data (``fastair.csrc``).

They are compiled on first use by :mod:`fastair.backends.native`, never at import.
"""
