"""Baton's modules for functions.

    from baton import data

data is Baton's data layers (see baton.data): values passed between
functions by reference instead of inline.
"""
