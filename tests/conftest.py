"""Shared fixtures: Prefect under its test harness with a temporary home, tiny in-process models.

Tiny models are real transformers models with random weights and the real SmolLM2 tokenizer
(taken from the packaged GGUF's one-time conversion), saved as HF folders. They exercise every
code path of the engines in milliseconds; a few tests run the real packaged models end to end.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Must be set before prefect is imported anywhere.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefsynth-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Builds in tests compute their shards: a shard reused from another test's build would hide
# what the test measures. tests/test_shared_cache.py turns the cache on where it is tested.
os.environ["PREFSYNTH_SHARED_CACHE"] = "0"

import pytest

from tests.helpers import tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """A Prefect test server for the session; subprocess builds get its URL too."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        yield url


@pytest.fixture
def prefect_env(prefect_api_url: str) -> dict[str, str]:
    """Environment for a subprocess build that talks to the session's test server."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = prefect_api_url
    return env


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The packaged SmolLM2-135M-Instruct as an HF folder (converted once, cached)."""
    from prefsynth.engines.catalogue import hf_folder, resolve_model

    return hf_folder(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, smollm2_folder: Path) -> dict[str, Path]:
    """Two tiny random Llama models ("a", "b") sharing the SmolLM2 tokenizer and chat template."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "a": tiny_model(root / "tiny-a", smollm2_folder, seed=1),
        "b": tiny_model(root / "tiny-b", smollm2_folder, seed=2),
    }
