"""What this machine computes fastest, decided once: ``dtype: auto`` and torch's thread count.

``dtype: auto`` (the default) resolves per device:

* **CPU**: float32, unless the CPU has native bfloat16 instructions (``avx512_bf16`` or
  ``amx_bf16`` on x86, ``bf16`` on Arm) *and* a bfloat16 matmul measured here beats a float32
  one. Without native bf16, torch emulates it: on a 2-core AVX2 EPYC a bf16 matmul ran at
  1.2 GFLOP/s against 67-80 for fp32, and a bf16 forward of SmolLM2-135M was 2.2x (decode) to
  4.7x (prefill) slower. So a CPU without the instructions never gets bf16.
* **CUDA**: bfloat16 where the GPU supports it (``torch.cuda.is_bf16_supported``), else float16.

The measurement is cached per machine in ``<cache_dir>/device.json`` (keyed by CPU model, flags
and torch version), so it costs a fraction of a second once. A build resolves ``auto`` before it
computes any shard key (:func:`resolve_dtypes`): the keys, ``run.json`` and the card name the
dtype that really ran, and a build with ``auto`` equals one with that dtype written out.

Threads: torch defaults to one intra-op thread per core. A build that runs several tasks at
once (``task_runner.max_workers``) would then run cores x tasks threads, and oversubscribed
threads are catastrophic here (one decode step took 2.2-2.6 s instead of 0.3 s with another
busy process). :func:`configure_threads` sets ``cores // concurrent tasks`` threads (at least 1)
and always respects ``OMP_NUM_THREADS`` when the user set it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prefsynth.fileio import atomic_write_json

log = logging.getLogger(__name__)

_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_identity() -> tuple[str, set[str]]:
    model, flags = "", set[str]()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or platform.machine(), flags


def cpu_has_native_bf16() -> bool:
    return bool(_cpu_identity()[1] & _CPU_BF16_FLAGS)


def _matmul_seconds(dtype: Any, size: int = 512, repeats: int = 5) -> float:
    import torch

    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return best


def _cache_file() -> Path:
    from prefsynth.engines.catalogue import cache_dir

    return cache_dir() / "device.json"


@cache
def cpu_dtype() -> str:
    """float32 or bfloat16 for this CPU (see the module docstring), measured once and cached."""
    import torch

    model, flags = _cpu_identity()
    native = bool(flags & _CPU_BF16_FLAGS)
    ident = f"{model}|{sorted(flags & _CPU_BF16_FLAGS)}|{torch.__version__}"
    path = _cache_file()
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("identity") == ident and saved.get("cpu_dtype") in ("float32", "bfloat16"):
            return str(saved["cpu_dtype"])
    except (OSError, ValueError, AttributeError, RecursionError):
        pass  # unreadable, not JSON or not an object: measure again and overwrite it
    record: dict[str, Any] = {"identity": ident, "native_bf16": native}
    if native:
        fp32, bf16 = _matmul_seconds(torch.float32), _matmul_seconds(torch.bfloat16)
        record.update(fp32_matmul_s=fp32, bf16_matmul_s=bf16)
        choice = "bfloat16" if bf16 < fp32 else "float32"
    else:
        choice = "float32"  # emulated bf16 is several times slower; never pick it
    record["cpu_dtype"] = choice
    try:
        atomic_write_json(path, record, indent=1)
    except OSError as e:  # a read-only cache only costs the measurement next time
        log.debug("could not cache the device measurement: %s", e)
    return choice


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """The concrete dtype ``auto`` means on ``device`` (other values pass through)."""
    if dtype != "auto":
        return dtype
    device = resolve_device(device)
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "cpu":
        return cpu_dtype()
    return "float32"  # mps and others: the safe choice


def resolve_dtypes(model: BaseModel) -> Any:
    """A copy of a config with every ``dtype: auto`` of a transformers model (the entries of
    its models table, reward models included) replaced by the dtype it resolves to here, so
    shard keys and records name what really ran. vLLM and OpenAI-compatible servers keep
    ``auto``: they choose for themselves. Works on any config object or engine spec."""
    changed: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolve_value(value)
        if new is not value:
            changed[name] = new
    if (
        "dtype" in type(model).model_fields
        and getattr(model, "dtype", None) == "auto"
        and getattr(model, "backend", None) == "transformers"
    ):
        changed["dtype"] = resolve_dtype("auto", getattr(model, "device", "auto"))
    return model.model_copy(update=changed) if changed else model


def _resolve_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return resolve_dtypes(value)
    if isinstance(value, list):
        items = [_resolve_value(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):  # the models table: alias -> engine spec
        entries = {k: _resolve_value(v) for k, v in value.items()}
        return entries if any(entries[k] is not value[k] for k in value) else value
    return value


CONCURRENT_TASKS_ENV = "PREFSYNTH_CONCURRENT_TASKS"


def set_concurrent_tasks(n: int) -> None:
    """Declare how many model tasks of one build may run at once on this machine (thread
    runner workers, or local Dask/Ray worker processes). An environment variable, so local
    cluster workers started afterwards inherit it."""
    os.environ[CONCURRENT_TASKS_ENV] = str(max(1, n))


_TASK = threading.local()


@contextlib.contextmanager
def task_share(concurrent_tasks: int | None) -> Iterator[None]:
    """Declare, for the calling thread only, how many model tasks run beside it: a task of the
    thread runner says how many of its kind run at once, so that two tasks of different stages
    running side by side (the skill list beside a PiKa shard) each keep the thread count they
    would get alone. ``None`` leaves the process-wide declaration in force."""
    previous = getattr(_TASK, "concurrent", None)
    _TASK.concurrent = concurrent_tasks if concurrent_tasks is not None else previous
    try:
        yield
    finally:
        _TASK.concurrent = previous


def configure_threads(concurrent_tasks: int | None = None) -> int:
    """Set torch's intra-op threads for the calling thread: ``OMP_NUM_THREADS`` when set,
    otherwise cores // concurrent tasks (at least 1; by default the number this thread's task
    declared with :func:`task_share`, else the number the build declared for the process with
    :func:`set_concurrent_tasks`). Returns the number set.

    The count decides more than speed: a bfloat16 forward pass on 1 thread and on 2 gave
    different sampled texts on a 2-core Xeon with AMX (float32 gave the same), so a task's
    thread count is a fixed function of the build's plan, never of which task finished first."""
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    threads = int(env) if env.isdigit() and int(env) > 0 else 0
    if not threads:
        if concurrent_tasks is None:
            concurrent_tasks = getattr(_TASK, "concurrent", None)
        if concurrent_tasks is None:
            declared = os.environ.get(CONCURRENT_TASKS_ENV, "1").strip()
            concurrent_tasks = int(declared) if declared.isdigit() else 1
        threads = max(1, cpu_count() // max(1, concurrent_tasks))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
