"""dtype: auto and the thread count: decided from the machine, never bf16 on a CPU that only
emulates it, cached once per machine, and resolved before a build keys its shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from prefsynth.engines import device
from prefsynth.flows.runners import concurrent_model_tasks

from prefsynth.config import BuildConfig, TaskRunnerConfig, TransformersSpec, load_config


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREFSYNTH_CACHE_DIR", str(tmp_path))
    device.cpu_dtype.cache_clear()
    yield tmp_path
    device.cpu_dtype.cache_clear()


def _cpu(monkeypatch: pytest.MonkeyPatch, flags: set[str], fp32_s: float, bf16_s: float) -> list:
    measured: list[Any] = []
    monkeypatch.setattr(device, "_cpu_identity", lambda: ("Test CPU", {"avx2", *flags}))

    def matmul(dtype: Any, size: int = 512, repeats: int = 5) -> float:
        measured.append(dtype)
        return bf16_s if dtype == torch.bfloat16 else fp32_s

    monkeypatch.setattr(device, "_matmul_seconds", matmul)
    return measured


def test_cpu_without_native_bf16_gets_float32_without_measuring(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = _cpu(monkeypatch, set(), fp32_s=1.0, bf16_s=0.1)  # even if bf16 "looked" faster
    assert device.resolve_dtype("auto", "cpu") == "float32"
    assert measured == []
    assert '"cpu_dtype": "float32"' in (fresh_cache / "device.json").read_text()


def test_native_bf16_is_chosen_only_when_measured_faster_and_cached(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = _cpu(monkeypatch, {"avx512_bf16"}, fp32_s=1.0, bf16_s=0.4)
    assert device.resolve_dtype("auto", "cpu") == "bfloat16"
    assert measured == [torch.float32, torch.bfloat16]
    device.cpu_dtype.cache_clear()  # a new process: reads device.json, measures nothing
    assert device.resolve_dtype("auto", "cpu") == "bfloat16"
    assert len(measured) == 2

    slow = _cpu(monkeypatch, {"amx_bf16"}, fp32_s=0.4, bf16_s=1.0)  # another CPU identity
    device.cpu_dtype.cache_clear()
    assert device.resolve_dtype("auto", "cpu") == "float32"
    assert slow == [torch.float32, torch.bfloat16]
    assert device.resolve_dtype("bfloat16", "cpu") == "bfloat16"  # explicit values pass


def test_a_build_config_has_no_auto_left_for_transformers(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cpu(monkeypatch, set(), fp32_s=1.0, bf16_s=2.0)
    config = load_config(
        None,
        [
            "models.judge.backend=vllm",
            "models.judge.model=smollm2-135m-instruct",
            "annotators.judge.model=judge",
            "models.writer.model=smollm2-135m-instruct",
            "models.writer.dtype=bfloat16",
            "instructions.model=writer",
            "models.rm.model=/some/rm",
            "models.rm.task=reward",
            "annotators.reward_models=[{name: rm, model: rm}]",
        ],
    )
    resolved = device.resolve_dtypes(config)
    assert isinstance(resolved, BuildConfig)
    spec = resolved.engine_spec
    assert spec(resolved.responses.model).dtype == "float32"
    assert spec(resolved.annotators.cdr.weak).dtype == "float32"
    assert spec("rm").dtype == "float32"  # reward models are models-table entries too
    assert spec(resolved.instructions.model).dtype == "bfloat16"
    assert spec(resolved.annotators.judge.model).dtype == "auto"  # vLLM chooses for itself
    assert config.engine_spec("smollm2").dtype == "auto"  # the user's config is not modified
    # the same build written out explicitly has the same content hash
    explicit = config.model_copy(deep=True)
    for alias in ("smollm2", "gemma3", "rm"):
        explicit.models[alias].dtype = "float32"  # type: ignore[union-attr]
    assert resolved.content_hash() == explicit.content_hash()
    assert device.resolve_dtypes(TransformersSpec(model="m")).dtype == "float32"


def test_threads_follow_omp_num_threads_then_cores_over_concurrent_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "cpu_count", lambda: 8)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert device.configure_threads() == 3 == torch.get_num_threads()
        monkeypatch.delenv("OMP_NUM_THREADS")
        device.set_concurrent_tasks(4)
        assert device.configure_threads() == 2 == torch.get_num_threads()
        assert device.configure_threads(16) == 1
        device.set_concurrent_tasks(1)
        assert device.configure_threads() == 8
    finally:
        monkeypatch.delenv(device.CONCURRENT_TASKS_ENV, raising=False)
        torch.set_num_threads(before)


def test_concurrent_model_tasks_per_runner() -> None:
    assert concurrent_model_tasks(TaskRunnerConfig(kind="thread", max_workers=3)) == 3
    assert concurrent_model_tasks(TaskRunnerConfig(kind="dask", n_workers=2)) == 2
    remote = TaskRunnerConfig(kind="ray", address="ray://10.0.0.1:10001", n_workers=4)
    assert concurrent_model_tasks(remote) == 1


def test_a_cast_folder_holds_exactly_the_weights_cast_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hf_folder(model, "bfloat16") of a packaged GGUF: every tensor equals the float32
    folder's cast at load (what a bfloat16 engine loaded before), the tokenizer files are
    there, and the folder is made once."""
    import torch
    from prefsynth.engines import catalogue
    from transformers import AutoModelForCausalLM

    model = catalogue.resolve_model("smollm2-135m-instruct")
    fp32 = catalogue.hf_folder(model)
    monkeypatch.setattr(catalogue, "cache_dir", lambda: tmp_path)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / fp32.name).symlink_to(fp32)  # the float32 conversion, not redone
    cast = catalogue.hf_folder(model, "bfloat16")
    assert cast == tmp_path / "hf" / f"{fp32.name}-bfloat16"
    assert {f.name for f in fp32.iterdir()} <= {f.name for f in cast.iterdir()}
    mtime = (cast / "model.safetensors").stat().st_mtime_ns
    assert catalogue.hf_folder(model, "bfloat16") == cast
    assert (cast / "model.safetensors").stat().st_mtime_ns == mtime
    at_load = AutoModelForCausalLM.from_pretrained(fp32, dtype=torch.bfloat16).state_dict()
    stored = AutoModelForCausalLM.from_pretrained(cast).state_dict()
    assert stored.keys() == at_load.keys()
    for name, tensor in at_load.items():
        assert stored[name].dtype == torch.bfloat16
        assert torch.equal(stored[name], tensor), name
