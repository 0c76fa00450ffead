"""Two scheduled rebuilds in a row (the flow body, in-process): each is a new release with a new
seed, the second card compares itself with the first, and publishing goes through the Hub
client's boundary (a recording fake: no machine here reaches the Hub)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import prefsynth.curation.publish as publish
import pytest
import yaml
from prefsynth.flows.schedule import rebuild_flow

from tests.helpers import FakeApi, tiny_overrides


def test_second_release_compares_with_the_first_and_is_pushed(
    prefect_api_url: str,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apis: list[FakeApi] = []

    def factory(token: str) -> Any:
        apis.append(FakeApi(token=token))
        return apis[-1]

    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_tests")
    monkeypatch.setattr(publish, "hf_api", factory)
    sets = [
        *tiny_overrides(tiny_models),
        f"output_dir={tmp_path / 'out'}",
        "name=weekly",
        "publish.repo=org/weekly-prefs",
    ]
    first = rebuild_flow(overrides=sets)
    second = rebuild_flow(overrides=sets)
    assert first["run_id"] != second["run_id"]
    releases = json.loads((tmp_path / "out" / "weekly.releases.json").read_text())
    assert [r["run_id"] for r in releases] == [first["run_id"], second["run_id"]]
    runs = [json.loads((Path(r["run_dir"]) / "run.json").read_text()) for r in releases]
    assert runs[0]["config"]["seed"] != runs[1]["config"]["seed"]  # a new sample each release
    card = (Path(releases[1]["run_dir"]) / "README.md").read_text()
    assert "Changes since the previous release" in card and first["run_id"] in card
    first_card = (Path(releases[0]["run_dir"]) / "README.md").read_text()
    assert "Changes since the previous release" not in first_card
    # each release was pushed once, as one commit with the card and every config
    assert len(apis) == 2
    for api, release in zip(apis, releases, strict=True):
        assert api.names() == ["create_repo", "upload_folder"]
        assert api.calls[0][1] == ("org/weekly-prefs",)
        assert "README.md" in api.uploaded and release["published"]["repo"] == "org/weekly-prefs"
    pushed_card = Path(releases[1]["run_dir"]) / "release" / "README.md"
    front = yaml.safe_load(pushed_card.read_text().split("---")[1])
    assert {c["config_name"] for c in front["configs"]} == {"default", "sft", "dropped_pairs"}
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".yaml", ".txt"):
            assert "hf_secret_token_for_tests" not in path.read_text(errors="ignore")
