"""prefsynth.heap: the CLI caps glibc's heap arenas unless the user chose a number."""

from __future__ import annotations

import platform

import pytest

from prefsynth.heap import limit_heap_arenas


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's mallopt")
def test_caps_the_arenas_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_heap_arenas() is True  # mallopt accepted M_ARENA_MAX


def test_the_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_heap_arenas() is False


def test_a_model_load_hands_its_transients_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_engine trims the heap after a load (Gemma 3's tokenizer build leaves ~73 MiB of freed
    heap otherwise), and a cached engine costs nothing."""
    import prefsynth.engines as engines

    from prefsynth.config import load_config

    spec = load_config(None, []).models["smollm2"]
    trims: list[int] = []
    loaded = object()
    monkeypatch.setattr(engines, "_ENGINES", {})
    monkeypatch.setattr(engines, "_load", lambda s: loaded)
    monkeypatch.setattr(
        engines, "_return_freed_memory", lambda: trims.append(len(engines._ENGINES))
    )
    assert engines.get_engine(spec) is loaded and engines.get_engine(spec) is loaded
    assert trims == [1]  # once, after the engine was stored
