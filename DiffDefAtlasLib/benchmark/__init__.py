"""Speed and memory benchmarks behind ``diffdef-atlas benchmark``: medians and spread of repeated runs, peak memory.

- :mod:`.timing`: repeated measurement (median, quartiles, min, max) and peak memory;
- :mod:`.suites`: generation latency, registration latency, training throughput per stage, latency against grid size;
- :mod:`.cli`: the command, which prints a table and can write JSON.

Example:
    >>> from DiffDefAtlasLib.benchmark.timing import measure
    >>> measure(lambda: None, repeats=3).runs
    3
"""
