"""Publishing: the release folder (configs, splits by instruction, card) and the Hub push.

Why one module (over 400 lines): it tests one module, :mod:`prefsynth.curation.publish`, and its
tests share one finished run folder and one fake Hub client.

No network: the Hub client is a fake that records its calls, injected directly or through
``prefsynth.curation.publish.hf_api`` (the factory the CLI path uses).
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

import pytest
from prefsynth.curation import publish
from prefsynth.curation.publish import (
    PublishError,
    build_release,
    is_transient,
    push_release,
    split_instructions,
)

from prefsynth.config import PublishConfig
from prefsynth.errors import InputDataError
from tests.helpers import COMMIT_URL, FakeApi, front_matter, make_pairs, make_record

TOKEN = "hf_SecretToken1234567890abcdefXYZ"


# --------------------------------------------------------------------------- fixtures


def make_run_dir(
    root: Path,
    run_id: str = "demo-1",
    n: int = 20,
    per_instruction: int = 2,
    dropped: int = 3,
    publish_block: dict[str, Any] | None = None,
) -> Path:
    from prefsynth.curation.dataset import write_dataset

    run_dir = root / run_id
    write_dataset(run_dir, make_pairs(n, per_instruction, dropped), ["cdr"])
    run = make_record(run_id, pairs_kept=n * per_instruction, pairs_dropped=dropped)
    if publish_block is not None:
        run.config["publish"] = publish_block
    run.save(run_dir / "run.json")
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "out")


def test_a_build_that_keeps_no_pair_leaves_a_dataset_that_loads(tmp_path: Path) -> None:
    """datasets writes no shard for an empty split and then cannot load it back (IndexError
    in ``load_from_disk``); a build that keeps no pair (a release whose seed drops both of a
    tiny build's pairs) must still leave a dataset with 0 rows and the TRL columns."""
    from datasets import load_from_disk
    from prefsynth.curation.dataset import write_dataset

    counts = write_dataset(tmp_path, make_pairs(0, 1, dropped=2), ["cdr"])
    train = load_from_disk(str(tmp_path / "dataset"))["train"]
    assert len(train) == 0 and {"prompt", "chosen", "rejected", "margin"} <= set(train.column_names)
    assert counts["kept"] == 0 and counts["dropped"] == 2


def http_error(status: int, message: str = "error") -> Exception:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        import httpx2 as hx
    except ImportError:  # older huggingface_hub
        import httpx as hx
    request = hx.Request("POST", "https://huggingface.co/api/datasets/org/name/commit/main")
    return HfHubHTTPError(message, response=hx.Response(status, request=request))


def _configs(release_dir: Path) -> dict[str, dict[str, str]]:
    card = (release_dir / "README.md").read_text()
    return {
        c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]}
        for c in front_matter(card)["configs"]
    }


def _read(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


# --------------------------------------------------------------------------- splits


def test_split_by_instruction_is_disjoint_and_sized(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, n=40, per_instruction=2, dropped=3)
    release = build_release(run_dir, PublishConfig(test_size=0.25, split_seed=1))
    data = release.release_dir / "data"
    train = _read(data / "default" / "train.parquet")
    test = _read(data / "default" / "test.parquet")
    train_ids = {r["instruction_id"] for r in train}
    test_ids = {r["instruction_id"] for r in test}
    assert not train_ids & test_ids
    assert len(train_ids | test_ids) == 40
    assert len(test_ids) == 10 and len(test) == 20  # both pairs of each test instruction
    assert release.rows["default"] == {"train": 60, "test": 20}
    # SFT rows of test instructions are in the sft test split, never in its train split
    sft_train = {r["instruction_id"] for r in _read(data / "sft" / "train.parquet")}
    sft_test = {r["instruction_id"] for r in _read(data / "sft" / "test.parquet")}
    assert sft_test == test_ids
    assert not sft_train & test_ids


def test_split_is_seeded() -> None:
    ids = [f"ins-{i}" for i in range(200)]
    first = split_instructions(ids, 0.1, seed=0)
    assert first == split_instructions(list(reversed(ids)), 0.1, seed=0)  # order-independent
    assert first != split_instructions(ids, 0.1, seed=1)
    assert len(first) == 20
    assert split_instructions(ids, 0.0, seed=0) == set()
    assert len(split_instructions(ids[:3], 0.1, seed=0)) == 1  # at least one when asked for


def test_no_test_split_with_test_size_zero(run_dir: Path) -> None:
    release = build_release(run_dir, PublishConfig(test_size=0.0))
    assert release.rows == {
        "default": {"train": 40},
        "dropped_pairs": {"train": 3},
        "sft": {"train": 23},
    }
    assert all(list(splits) == ["train"] for splits in _configs(release.release_dir).values())


# --------------------------------------------------------------------------- the release folder


def test_configs_hold_the_right_rows(run_dir: Path) -> None:
    from datasets import load_from_disk

    release = build_release(run_dir, PublishConfig(test_size=0.1))
    assert set(release.datasets) == {"default", "dropped_pairs", "sft"}
    assert sum(release.rows["default"].values()) == 40
    dropped = _read(release.release_dir / "data" / "dropped_pairs" / "train.parquet")
    assert len(dropped) == 3 and {r["reason"] for r in dropped} == {"weak_preference"}
    sft = [
        r
        for split in release.rows["sft"]
        for r in _read(release.release_dir / "data" / "sft" / f"{split}.parquet")
    ]
    # one row per instruction (kept and dropped), the best-scored response (slot 1 of 0..1)
    assert len(sft) == 23 and len({r["instruction_id"] for r in sft}) == 23
    assert {r["response_id"] for r in sft if r["instruction_id"].startswith("ins-")} == {
        f"r-{i}-1-c" for i in range(20)
    }
    assert sft[0]["messages"][0]["role"] == "user"
    for name, splits in release.rows.items():
        on_disk = load_from_disk(str(release.release_dir / name))
        assert {s: d.num_rows for s, d in on_disk.items()} == splits
    # same features (TRL conversational messages, ids, scores) as the build's own dataset
    built = load_from_disk(str(run_dir / "dataset"))["train"]
    assert release.datasets["default"]["train"].features == built.features


def test_card_configs_match_the_files_on_disk(run_dir: Path) -> None:
    release = build_release(run_dir, PublishConfig(repo="org/name", test_size=0.2))
    configs = _configs(release.release_dir)
    listed = {path for splits in configs.values() for path in splits.values()}
    on_disk = {
        p.relative_to(release.release_dir).as_posix()
        for p in (release.release_dir / "data").rglob("*.parquet")
    }
    assert listed == on_disk
    assert configs["default"] == {
        "train": "data/default/train.parquet",
        "test": "data/default/test.parquet",
    }
    for config, splits in configs.items():
        for split, path in splits.items():
            assert len(_read(release.release_dir / path)) == release.rows[config][split]
    card = (release.release_dir / "README.md").read_text()
    assert 'load_dataset("org/name", "default")' in card


def test_rebuilding_replaces_the_release_atomically(run_dir: Path) -> None:
    build_release(run_dir, PublishConfig(test_size=0.5))
    release = build_release(run_dir, PublishConfig(test_size=0.0))
    assert not (release.release_dir / "data" / "default" / "test.parquet").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".release")]


def test_missing_or_unfinished_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"run\.json"):
        build_release(tmp_path / "nothing", PublishConfig())
    run_dir = make_run_dir(tmp_path, n=2, per_instruction=1)
    (run_dir / "data" / "dropped_pairs.parquet").unlink()
    with pytest.raises(InputDataError, match=r"dropped_pairs\.parquet"):
        build_release(run_dir, PublishConfig())
    run = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**run, "status": "running"}))
    with pytest.raises(InputDataError, match="not 'completed'"):
        build_release(run_dir, PublishConfig())


def test_card_compares_with_the_previous_release(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = make_run_dir(out, "demo-0", n=3, per_instruction=1, dropped=0)
    second = make_run_dir(out, "demo-1", n=4, per_instruction=1, dropped=0)
    (out / "demo.releases.json").write_text(
        json.dumps([{"run_id": "demo-0", "run_dir": str(first)}])
    )
    card = (build_release(second, PublishConfig()).release_dir / "README.md").read_text()
    assert "Previous release: `demo-0`" in card
    assert "**1 added**, **0 removed**, 3 unchanged" in card
    assert "| pairs_kept | 3 | 4 | +1 |" in card
    # the first release has nothing before it
    assert (
        "## Changes since"
        not in (build_release(first, PublishConfig()).release_dir / "README.md").read_text()
    )


# --------------------------------------------------------------------------- the push


def test_push_makes_the_expected_hub_calls(run_dir: Path) -> None:
    config = PublishConfig(repo="org/name", private=True, revision="v1", test_size=0.1)
    release = build_release(run_dir, config)
    api = FakeApi()
    record = push_release(release, config, api)
    assert api.names() == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1:] == (
        ("org/name",),
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert api.calls[1][1:] == (
        ("org/name",),
        {"branch": "v1", "repo_type": "dataset", "exist_ok": True},
    )
    upload = api.calls[2][2]
    assert upload == {
        "repo_id": "org/name",
        "repo_type": "dataset",
        "folder_path": str(release.release_dir),
        "revision": "v1",
        "commit_message": "prefsynth release demo-1",
        "allow_patterns": ["README.md", "data/**"],
    }
    assert api.uploaded == ["README.md", *sorted(_all_data_files(release.release_dir))]
    written = json.loads((run_dir / "publish.json").read_text())
    assert written == record
    assert record["repo"] == "org/name" and record["revision"] == "v1"
    assert record["private"] is True and record["run_id"] == "demo-1"
    assert record["commit_url"] == COMMIT_URL and record["commit_oid"] == "abc123"
    assert record["rows"] == release.rows and record["time"]


def _all_data_files(release_dir: Path) -> list[str]:
    return [
        p.relative_to(release_dir).as_posix()
        for p in (release_dir / "data").rglob("*")
        if p.is_file()
    ]


def test_no_branch_call_without_revision(run_dir: Path) -> None:
    config = PublishConfig(repo="org/name", private=False)
    api = FakeApi()
    push_release(build_release(run_dir, config), config, api)
    assert api.names() == ["create_repo", "upload_folder"]
    assert api.calls[0][2]["private"] is False and api.calls[1][2]["revision"] is None


def test_transient_errors_are_retried_with_backoff(run_dir: Path) -> None:
    config = PublishConfig(repo="org/name", max_retries=5)
    release = build_release(run_dir, config)
    api = FakeApi({"upload_folder": [http_error(503), http_error(429)]})
    sleeps: list[float] = []
    record = push_release(release, config, api, sleep=sleeps.append)
    assert api.names().count("upload_folder") == 3
    assert sleeps == [1.0, 2.0]
    assert record["commit_url"] == COMMIT_URL


def test_retries_are_bounded(run_dir: Path) -> None:
    config = PublishConfig(repo="org/name", max_retries=2)
    release = build_release(run_dir, config)
    api = FakeApi({"create_repo": [ConnectionError("reset")] * 5})
    sleeps: list[float] = []
    with pytest.raises(PublishError, match="ConnectionError"):
        push_release(release, config, api, sleep=sleeps.append)
    assert api.names() == ["create_repo"] * 3 and sleeps == [1.0, 2.0]


def test_auth_error_fails_at_once_and_keeps_the_release(run_dir: Path) -> None:
    config = PublishConfig(repo="org/name", revision="v1")
    release = build_release(run_dir, config)
    api = FakeApi({"upload_folder": [http_error(401, "Unauthorized")]})
    sleeps: list[float] = []
    with pytest.raises(PublishError) as failure:
        push_release(release, config, api, sleep=sleeps.append)
    assert api.names().count("upload_folder") == 1 and sleeps == []
    message = str(failure.value)
    assert "HTTP 401" in message
    assert f"The release is saved at {release.release_dir}" in message
    assert f"prefsynth publish {run_dir} --repo org/name" in message and "--revision v1" in message
    assert (release.release_dir / "README.md").is_file()
    assert not (run_dir / "publish.json").exists()


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (http_error(500), True),
        (http_error(502), True),
        (http_error(429), True),
        (http_error(401), False),
        (http_error(403), False),
        (http_error(404), False),
        (ConnectionError("reset"), True),
        (TimeoutError("slow"), True),
        (OSError("network unreachable"), True),
        (FileNotFoundError("gone"), False),
        (ValueError("bug"), False),
    ],
)
def test_transient_classification(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_library_network_errors_are_transient() -> None:
    import httpx
    import requests

    assert is_transient(httpx.ConnectError("refused"))
    assert is_transient(requests.ConnectionError("refused"))
    assert is_transient(requests.Timeout("slow"))


# --------------------------------------------------------------------------- the token


@pytest.fixture
def no_cached_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def test_missing_token_says_how_to_log_in(run_dir: Path, no_cached_token: None) -> None:
    config = PublishConfig(repo="org/name")
    with pytest.raises(PublishError, match=r"huggingface-cli login.*HF_TOKEN"):
        push_release(build_release(run_dir, config), config)


def test_token_never_leaks(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    made: list[FakeApi] = []
    failures = {
        "upload_folder": [
            http_error(503, f"busy (Authorization: Bearer {TOKEN})"),
            http_error(401, f"invalid token {TOKEN}"),
        ]
    }

    def factory(token: str) -> FakeApi:
        made.append(FakeApi(failures, token=token))
        return made[-1]

    monkeypatch.setattr(publish, "hf_api", factory)
    caplog.set_level(logging.DEBUG)
    config = PublishConfig(repo="org/name")
    release = build_release(run_dir, config)
    with pytest.raises(PublishError) as failure:
        push_release(release, config, sleep=lambda s: None)
    assert made[0].token == TOKEN  # the client got it ...
    shown = "".join(traceback.format_exception(failure.value)) + repr(failure.value)
    assert "invalid token" in shown  # ... the cause is reported ...
    record = push_release(release, config, sleep=lambda s: None)  # and a retry succeeds
    assert record["commit_url"] == COMMIT_URL
    # ... but the token is nowhere: errors, logs, output, files
    assert "retry 1/5" in caplog.text
    out = capsys.readouterr()
    for text in (shown, caplog.text, out.out, out.err):
        assert TOKEN not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------- CLI


def test_cli_publish_pushes_with_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from prefsynth.cli import app

    run_dir = make_run_dir(tmp_path, publish_block={"repo": "org/from-config", "private": True})
    made: list[FakeApi] = []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(
        publish, "hf_api", lambda token: made.append(FakeApi(token=token)) or made[-1]
    )
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "publish",
            str(run_dir),
            "--repo",
            "org/name",
            "--public",
            "--revision",
            "v2",
            "--test-size",
            "0.2",
            "--split-seed",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pushed demo-1 to org/name@v2 (public)" in result.output
    assert COMMIT_URL in result.output and TOKEN not in result.output
    api = made[0]
    assert api.calls[0][2]["private"] is False
    assert api.calls[-1][2]["revision"] == "v2"
    assert json.loads((run_dir / "publish.json").read_text())["rows"]["default"]["test"] == 8
    # without flags the run's publish block applies
    result = runner.invoke(app, ["publish", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert made[1].calls[0][1] == ("org/from-config",) and made[1].calls[0][2]["private"] is True


def test_cli_publish_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cached_token: None
) -> None:
    from typer.testing import CliRunner

    from prefsynth.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["publish", str(tmp_path / "missing"), "--repo", "org/name"])
    assert result.exit_code == 2
    assert "run.json" in result.output and "Traceback" not in result.output
    run_dir = make_run_dir(tmp_path, n=2, per_instruction=1)
    result = runner.invoke(app, ["publish", str(run_dir)])
    assert result.exit_code == 2 and "no Hub repo" in result.output
    result = runner.invoke(app, ["publish", str(run_dir), "--repo", "org/name"])
    assert result.exit_code == 2 and "huggingface-cli login" in result.output
    result = runner.invoke(app, ["publish", str(run_dir), "--repo", "not a repo"])
    assert result.exit_code == 2 and "repo" in result.output
