"""Latency on every runtime: a positive finite median, the ONNX graphs made on the fly or read from an export."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pipeline.config import RUNTIMES, LatencyConfig
from pipeline.measure import latency_ms
from pipeline.runtimes import available_cores

FAST = LatencyConfig(seq_len=16, repeats=2, warmup=1)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_latency_is_positive_and_finite_on_every_runtime(tiny_xlmr, runtime):
    ms = latency_ms(tiny_xlmr, dataclasses.replace(FAST, runtime=runtime, batch=2))
    assert ms > 0 and math.isfinite(ms)


def test_latency_settings_are_checked():
    with pytest.raises(ValueError, match="seq_len must be at least 1"):
        LatencyConfig(seq_len=0)


def test_threads_follow_the_free_cores():
    assert available_cores(busy=0) >= available_cores(busy=1) >= 1
    assert available_cores(busy=1000) == 1
