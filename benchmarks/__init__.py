"""Benchmarks of our code against peers measured in the same run: ``python -m benchmarks.NAME``.

Every module here uses :mod:`benchmarks.harness`; see ``benchmarks/README.md``.
"""
