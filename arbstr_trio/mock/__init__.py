"""A mock OpenAI-compatible provider: for ``--mock``, the tests and the benchmarks.

Kept light on purpose: the configuration imports :mod:`.behaviour`, so this package
must not import the server (which imports the configuration) at import time.
"""
