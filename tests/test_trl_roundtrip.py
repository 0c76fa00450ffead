"""TRL reads what a build writes: one ``DPOTrainer`` step and one ``RewardTrainer`` step on the
``dataset/`` of a real tiny build, unchanged, with the tiny in-process model.

The dataset is TRL's conversational preference format, so no column is renamed or dropped
before training. ``RewardTrainer`` also reads the ``margin`` column into its loss
(-log sigmoid(r_chosen - r_rejected - margin)); the build here sets ``dataset.margin_scale: 2``
and the test checks the column is 2 x mu, that TRL's collator passes it on, and that each
trainer's step changes the model's weights (a step that silently trained on nothing fails).
TRL's supported range is the ``trl`` pin of the ``test`` extra (README, "Use with TRL").
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from datasets import load_from_disk
from prefsynth.flows.build import build

from prefsynth.config import load_config
from tests.helpers import tiny_overrides

trl = pytest.importorskip("trl", reason="trl is in the test extra")

MARGIN_SCALE = 2.0


@pytest.fixture(scope="module")
def train(prefect_api_url: str, tiny_models: dict[str, Path], tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("trl-build")
    sets = [*tiny_overrides(tiny_models), f"output_dir={out}"]
    # every positive pair of 8 instructions (random tiny models write near-duplicates), so
    # that a batch holds two rows
    sets += ["filter.keep_share=null", "instructions.n=8", "instructions.dedup.enabled=false"]
    cfg = load_config(None, [*sets, f"dataset.margin_scale={MARGIN_SCALE}"])
    run = build(cfg)
    assert run.status == "completed"
    ds = load_from_disk(str(cfg.run_dir() / "dataset"))["train"]
    assert len(ds) >= 2, "the tiny build must keep at least two pairs to train on"
    return ds


def _args(config_cls, out: Path):  # type: ignore[no-untyped-def]
    return config_cls(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        max_length=256,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        seed=0,
    )


def _weights(model) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _changed(before: dict[str, object], model) -> int:  # type: ignore[no-untyped-def]
    import torch

    after = dict(model.named_parameters())
    return sum(not torch.equal(w, after[n].detach()) for n, w in before.items())


def test_margin_column_is_scaled_mu(train) -> None:  # type: ignore[no-untyped-def]
    for row in train:
        assert row["margin"] == pytest.approx(MARGIN_SCALE * row["mu"])
    assert any(row["margin"] != 0 for row in train)


def test_one_dpo_step(train, tiny_models: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["a"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["a"])
    before = _weights(model)
    trainer = trl.DPOTrainer(
        model=model,
        args=_args(trl.DPOConfig, tmp_path),
        train_dataset=train,
        processing_class=tok,
    )
    result = trainer.train()
    assert result.global_step == 1
    assert math.isfinite(result.training_loss)
    assert _changed(before, model) > 0


def test_one_reward_step_reads_the_margin(
    train, tiny_models: dict[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["a"])
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["a"], num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    before = _weights(model)
    trainer = trl.RewardTrainer(
        model=model,
        args=_args(trl.RewardConfig, tmp_path),
        train_dataset=train,
        processing_class=tok,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert "margin" in batch  # TRL's collator keeps the column, so the loss uses it
    scaled = [MARGIN_SCALE * m for m in train["mu"]]
    for m in batch["margin"].tolist():
        assert min(abs(m - s) for s in scaled) < 1e-5
    result = trainer.train()
    assert result.global_step == 1
    assert _changed(before, model) > 0
