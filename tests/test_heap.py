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
