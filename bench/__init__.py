"""fieldsync benchmarks: scenarios of reference/perf_anchors.md §5, scored as ratios.

``python -m bench [--smoke|--quick|--full] [--json FILE]`` calibrates the primitives on the
relay's hot path in the same run (same machine, same item shapes, same filesystem), runs the
scenarios in fresh temporary directories, and prints a table of measured value, target and
pass/fail, then the whole result as JSON. Nothing here is a timed test: the smoke test only
checks the harness runs and reports every scenario.
"""
