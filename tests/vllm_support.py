"""Helpers for tests that need the vLLM sidecar environment (``make vllm-env``)."""

from __future__ import annotations

import pytest
from prefsynth.engines.vllm_engine import VLLMUnavailableError, sidecar_python


def require_sidecar() -> str:
    try:
        return sidecar_python()
    except VLLMUnavailableError as e:
        pytest.skip(f"vLLM sidecar not installed: {e}")
        raise
