"""Memory figures shared by the losses and, without torch, by the estimates of a run's peak memory."""

from __future__ import annotations

__all__ = ["CHUNK_ELEMENTS"]

# float32 elements of one chunk of the full-vocabulary losses (`pipeline.losses`): 256 MiB
CHUNK_ELEMENTS = 2**26
