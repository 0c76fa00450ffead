"""Config: defaults, YAML, --set overrides, and errors that name the field path (exit 2)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefsynth.config import BuildConfig, load_config, parse_override
from prefsynth.errors import ConfigError


def test_defaults_are_the_embedded_build() -> None:
    cfg = load_config()
    assert cfg == BuildConfig()
    assert cfg.engine_spec(cfg.instructions.model).model == "smollm2-135m-instruct"
    assert cfg.engine_spec(cfg.annotators.cdr.strong).model == "smollm2-135m-instruct"
    assert cfg.engine_spec(cfg.annotators.cdr.weak).model == "gemma3-270m"
    assert sorted(cfg.models) == ["gemma3", "smollm2"]  # each packaged model declared once
    assert cfg.run_dir() == Path("output") / f"default-{cfg.content_hash()[:8]}"


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: mine\nresponses:\n  n: 3\n  sampling: {temperature: 0.5}\n")
    cfg = load_config(path, ["responses.sampling.top_p=0.9", "instructions.n=7"])
    assert cfg.name == "mine"
    assert cfg.responses.n == 3
    assert cfg.responses.sampling.temperature == 0.5
    assert cfg.responses.sampling.top_p == 0.9
    assert cfg.instructions.n == 7


def test_override_values_are_yaml() -> None:
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=text with spaces") == (["a"], "text with spaces")
    with pytest.raises(ConfigError, match=r"expected stage\.field=value"):
        parse_override("novalue")


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["responses.n=abc"], "responses.n: Input should be a valid integer"),
        (["responses.sampling.tempreature=1"], "responses.sampling.tempreature: unknown field"),
        (["models.gemma3.backend=tpu"], "models.gemma3: Input tag 'tpu' found using 'backend'"),
        (["annotators.cdr.weak=gemma"], "annotators.cdr.weak: unknown model 'gemma'"),
        (["responses.mixture=[{model: nope}]"], "responses.mixture.0.model: unknown model 'nope'"),
        (
            ["models.smollm2.base_url=http://x"],
            "models.smollm2.transformers.base_url: unknown field",
        ),
        (["models.api.backend=openai", "models.api.model=m"], "models.api.openai.base_url: Field"),
        (
            ["models.g.model=/g", "annotators.reward_models=[{name: g, model: g}]"],
            "annotators.reward_models.0.model: model 'g' has task 'generate'",
        ),
        (["responses.n=0"], "responses.n: Input should be greater than or equal to 1"),
        (["nosuchstage.x=1"], "nosuchstage: unknown field"),
        (["responses.n.deeper=1"], "responses.n: Input should be a valid integer"),
    ],
)
def test_bad_values_name_the_field(sets: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, sets)
    assert expected in str(err.value)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("responses: [unclosed\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
    with pytest.raises(ConfigError, match=r"config file .*missing\.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_content_hash_ignores_where_output_goes() -> None:
    a = load_config(None, ["output_dir=/x", "task_runner.max_workers=3"])
    b = load_config()
    assert a.content_hash() == b.content_hash()
    assert load_config(None, ["seed=1"]).content_hash() != b.content_hash()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefsynth.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_bad_config_exits_2_with_path_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("responses:\n  n: many\n  colour: blue\n")
    proc = _cli("build", "--config", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "responses.n: Input should be a valid integer" in proc.stderr
    assert "responses.colour: unknown field" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_cli_set_override_error_exits_2() -> None:
    proc = _cli("config", "--set", "pairs.min_margin=-1")
    assert proc.returncode == 2
    assert "pairs.min_margin" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_config_prints_effective_config() -> None:
    proc = _cli("config", "--set", "responses.n=5")
    assert proc.returncode == 0, proc.stderr
    cfg = BuildConfig.model_validate(__import__("yaml").safe_load(proc.stdout))
    assert cfg.responses.n == 5


def test_help_is_fast() -> None:
    t0 = time.perf_counter()
    proc = _cli("--help")
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0
    assert "build" in proc.stdout
    assert elapsed < 2.0, f"prefsynth --help took {elapsed:.2f}s"
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, prefsynth.cli; "
            "print(sorted(m for m in ('torch','prefect','transformers','datasets') "
            "if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
    )
    assert heavy.stdout.strip() == "[]"


def test_shipped_example_configs_validate() -> None:
    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        load_config(path)
    default = Path(__file__).parents[1] / "configs" / "default.yaml"
    assert default in configs
    assert load_config(default) == BuildConfig()  # the shipped default is the embedded one


def test_cli_missing_model_and_seed_file_exit_2(tmp_path: Path) -> None:
    proc = _cli("build", "--out", str(tmp_path), "--set", "models.smollm2.model=/no/such/model")
    assert proc.returncode == 2
    assert "models.smollm2.model" in proc.stderr and "/no/such/model" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _cli(
        "build",
        "--out",
        str(tmp_path),
        "--set",
        f"instructions.seed_self_instruct.seeds_file={tmp_path}/x",
    )
    assert proc.returncode == 2
    assert f"instructions.seed_self_instruct.seeds_file: no such file {tmp_path}/x" in proc.stderr


def test_key_view_is_the_flat_engine_dict_of_before_the_models_table() -> None:
    """Shard keys hash key_view: each alias expanded to the old 16-field engine dict under the
    field's old name, fields of other backends at their old defaults."""
    from prefsynth.config import LEGACY_ENGINE_FIELDS

    cfg = load_config(
        None,
        [
            "models.api={backend: openai, model: m, base_url: 'http://x/v1', max_retries: 2}",
            "annotators.judge.model=api",
            "models.gemma3.dtype=float32",
        ],
    )
    judge = cfg.key_view(cfg.annotators.judge)
    assert "model" not in judge and list(judge)[:2] == ["enabled", "engine"]
    assert judge["engine"] == {
        **LEGACY_ENGINE_FIELDS,
        "model": "m",
        "backend": "openai",
        "base_url": "http://x/v1",
        "max_retries": 2,
    }
    cdr = cfg.key_view(cfg.annotators.cdr)
    assert list(cdr["weak"]) == list(LEGACY_ENGINE_FIELDS)
    assert cdr["weak"]["model"] == "gemma3-270m" and cdr["weak"]["dtype"] == "float32"
    assert cfg.key_view(cfg.instructions.dedup) == cfg.instructions.dedup.model_dump(mode="json")


def test_the_sampler_enters_shard_keys_only_when_not_hf() -> None:
    """Shards sampled with ``sampler: hf`` keep their keys; a nucleus build samples other
    tokens, so its keys differ."""
    from prefsynth.config import legacy_engine_dict

    cfg = load_config(None, ["models.smollm2.sampler=nucleus"])
    assert legacy_engine_dict(cfg.engine_spec("gemma3")) == legacy_engine_dict(
        load_config(None, []).engine_spec("gemma3")
    )
    assert "sampler" not in cfg.key_view(cfg.annotators.cdr)["weak"]
    assert cfg.key_view(cfg.annotators.cdr)["strong"]["sampler"] == "nucleus"
    assert cfg.engine_spec("smollm2").key() != load_config(None, []).engine_spec("smollm2").key()


def test_one_override_swaps_a_model_everywhere_it_is_used() -> None:
    cfg = load_config(None, ["models.smollm2.model=/my/model"])
    for alias in (cfg.instructions.model, cfg.responses.model, cfg.annotators.judge.model):
        assert cfg.engine_spec(alias).model == "/my/model"
    assert cfg.engine_spec("smollm2").backend == "transformers"  # merged over the default
    assert cfg.engine_spec(cfg.annotators.cdr.weak).model == "gemma3-270m"


def test_cli_models_lists_the_catalogue() -> None:
    from prefsynth.engines.catalogue import CATALOGUE

    proc = _cli("models")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if not line.startswith(" ")]
    assert names == list(CATALOGUE) and len(names) >= 3
    for m in CATALOGUE.values():
        assert f"{m.name:24} {m.kind:10} {m.license:12}" in proc.stdout
        assert m.description in proc.stdout


def test_a_duplicate_yaml_key_is_an_error_naming_key_and_line(tmp_path: Path) -> None:
    from prefsynth.inputs import parse_yaml

    path = tmp_path / "c.yaml"
    path.write_text("responses:\n  n: 2\nseed: 1\nresponses:\n  n: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}, line 4: duplicate key 'responses'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--set instructions\.mix: duplicate key 'pika'"):
        load_config(None, ["instructions.mix={pika: 1, pika: 2}"])
    # a key a merge brings in may still be overridden, as YAML intends
    merged = parse_yaml("a: &a {n: 1, m: 2}\nb:\n  <<: *a\n  n: 3\n", "x")
    assert merged["b"] == {"n": 3, "m": 2}


def test_check_references_names_the_field_and_skips_disabled_sections(tmp_path: Path) -> None:
    from prefsynth.config import check_references
    from prefsynth.errors import ModelNotFoundError

    missing = tmp_path / "f.json"
    cfg = load_config(None, [f"annotators.flr.followups_file={missing}"])
    with pytest.raises(ConfigError, match=f"annotators.flr.followups_file: no such file {missing}"):
        check_references(cfg)
    off = load_config(
        None, [f"annotators.flr.followups_file={missing}", "annotators.flr.enabled=0"]
    )
    check_references(off)

    def describe(spec: object) -> None:
        if getattr(spec, "model", "") == "/no/model":
            raise ModelNotFoundError("model '/no/model' is not there")

    cfg = load_config(None, ["models.w.model=/no/model", "annotators.cdr.weak=w"])
    with pytest.raises(ConfigError) as err:
        check_references(cfg, describe)
    assert str(err.value) == (
        "models.w.model (used by annotators.cdr.weak): model '/no/model' is not there"
    )
    check_references(load_config(None, ["models.w.model=/no/model"]), describe)  # unused alias
