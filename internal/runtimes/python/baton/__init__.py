"""Baton's modules for functions.

    from baton import data
    from baton import invoke

data is Baton's data layers (see baton.data): values passed between
functions by reference instead of inline. invoke (see baton.invoke) runs
another function through Baton and returns its result; large payloads go
by reference (direct transfers).
"""

from .invoke import invoke, InvokeError

__all__ = ["invoke", "InvokeError"]
