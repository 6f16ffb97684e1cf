"""Time scaling inside the server, for bench/tick --scale k (never loaded by the product).

Loaded like a handler module (JOBPROCESSOR_HANDLERS=...,bench.tick_scale) after the built-in handlers, it divides
by BENCH_TIME_SCALE the duration constants named in BENCH_SCALED_CONSTANTS ("module.NAME,...": module globals the
code reads at call time, e.g. the limiter's shortest call, the answer grace) and the declared timeout_s of the job
types in BENCH_SCALED_TIMEOUTS, so a scaled run keeps the ratios of those to the budget too. bench/tick/common.py
chooses the names (only those present in the code under test) and prints them.
"""
from __future__ import annotations

import dataclasses
import importlib
import os

from jobprocessor import handler_registry as registry

_k = float(os.environ.get("BENCH_TIME_SCALE", "1"))
if _k != 1:
    for qualified in filter(None, os.environ.get("BENCH_SCALED_CONSTANTS", "").split(",")):
        module_name, _, name = qualified.rpartition(".")
        module = importlib.import_module(module_name)
        setattr(module, name, getattr(module, name) / _k)
    for job_type in filter(None, os.environ.get("BENCH_SCALED_TIMEOUTS", "").split(",")):
        spec = registry.get_handler(job_type)
        if spec is not None and spec.timeout_s:
            registry._registry[job_type] = dataclasses.replace(spec, timeout_s=spec.timeout_s / _k)
