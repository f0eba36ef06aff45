"""The training config: everything that defines one run, as validated plain data."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bru_core.activations import canonical_activation
from bru_core.data import check_dataset
from bru_core.errors import ConfigError, config_error
from bru_core.models import model_kind


class TrainConfig(BaseModel):
    """Everything that defines one training run. Plain data: JSON in, JSON out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "digits"
    model: str = "mlp4"
    activation: str = "relu"
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.02, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)  # the paper uses no regularisation
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(10, ge=1)
    schedule: Literal["none", "cosine", "step"] = "none"
    step_epochs: int | None = Field(None, ge=1)  # step schedule: default epochs // 3
    step_gamma: float = Field(0.1, gt=0, le=1)
    seed: int = Field(0, ge=0)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False  # torch.compile the whole model (worth it for long runs on a GPU)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = Field(0, ge=0)  # fixes the validation split, independent of seed
    augment: bool | None = None  # None: on for CIFAR, off otherwise
    test_every_epoch: bool = False  # learning curves on the test set (never used to choose)
    data_dir: Path | None = None  # None: BRU_DATA_DIR or <BRU_HOME>/data
    download: bool = False

    @field_validator("activation")
    @classmethod
    def _activation(cls, value: str) -> str:
        return canonical_activation(value)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        try:
            return check_dataset(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("dataset: ")) from None

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        try:
            model_kind(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("model: ")) from None
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        return self

    @classmethod
    def parse(cls, values: Mapping[str, Any] | TrainConfig) -> TrainConfig:
        """Validate plain data; a bad field raises ConfigError naming it."""
        if isinstance(values, TrainConfig):
            return values
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise config_error(exc) from None
