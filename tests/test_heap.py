"""prefsynth.heap: the CLI caps glibc's heap arenas unless the user chose a number; a build's
garbage collections leave out what was alive when it started, until it ends."""

from __future__ import annotations

import gc
import platform
import weakref

import pytest

from prefsynth.heap import limit_heap_arenas, objects_alive_now_frozen


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


class _Node:
    """A reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_objects_alive_at_the_start_are_left_out_until_the_end() -> None:
    before = _Node()
    alive = weakref.ref(before)
    with objects_alive_now_frozen():
        assert gc.get_freeze_count() > 0
        del before  # garbage now, but frozen: a collection inside the block leaves it
        made_inside = _Node()
        inside = weakref.ref(made_inside)
        del made_inside
        gc.collect()
        assert inside() is None  # what the block made is collected as usual
        assert alive() is not None
    assert gc.get_freeze_count() == 0  # handed back: the next collection frees it
    gc.collect()
    assert alive() is None


def test_a_failed_block_hands_the_frozen_objects_back() -> None:
    with pytest.raises(RuntimeError), objects_alive_now_frozen():
        raise RuntimeError("a build that failed")
    assert gc.get_freeze_count() == 0
