"""Build progress without a terminal: one line per stage, so a CI log shows how far it got."""

from __future__ import annotations

import pytest
from prefsynth.flows.pipeline import ShardResult

from prefsynth.progress import BuildProgress


def test_one_line_per_stage_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with BuildProgress() as progress:
        assert progress.lines  # pytest's captured stderr is not a terminal
        progress.stage_started("responses", 2)
        for index, reused in ((0, False), (1, True)):
            result = ShardResult(
                stage="responses", index=index, key=f"k{index}", rows=15, reused=reused
            )
            progress.shard_done(result)
        progress.stage_done("responses")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("responses: 2 shards, 30 rows, 1 reused, ")
    assert lines[0].endswith(" s")
    assert "━" not in err  # no progress bar was drawn


def test_library_deprecations_are_hidden_and_real_warnings_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import warnings

    from prefsynth import cli

    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(var, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli._quiet_env(verbose=False)
        for module, category in (
            ("transformers.utils.deprecation", FutureWarning),
            ("torch.nn.modules.module", DeprecationWarning),
            ("transformers.generation.utils", UserWarning),
            ("prefsynth.flows.build", FutureWarning),
        ):
            warnings.warn_explicit("message", category, "file.py", 1, module=module)
    assert [(w.category, w.filename) for w in seen] == [
        (UserWarning, "file.py"),
        (FutureWarning, "file.py"),
    ]
