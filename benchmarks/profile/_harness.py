"""``benchmarks/run.py``, the benchmark harness, for the profile scripts:
its loadgen build, loadgen arguments, ports and /proc readers.

Loaded by path because this directory has a ``run.py`` of its own.
"""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "wsplugin_bench_harness", Path(__file__).resolve().parents[1] / "run.py"
)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)
