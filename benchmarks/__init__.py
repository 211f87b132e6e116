"""Speed and memory targets, each printed next to a baseline measured in the same run.

Run them with `d1 bench NAME` (or `python -m benchmarks.NAME_bench`). Targets live here, never in
timed unit tests, because the hosts are shared and noisy.
"""
