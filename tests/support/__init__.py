"""Test-suite helpers without fixtures: a disk cache for slow reference writers, ports, servers.

Plain modules (no pytest imports at module level) so that benchmarks can import them too.
"""
