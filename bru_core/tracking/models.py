"""What a repeat's run carries besides its metrics: the trained model (serialized as
``model_format`` chooses), the data set it was trained on with its digest, the environment
record; and the registration of the best seed's model."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunTag

import bru_core
from bru_core.tracking.provenance import environment
from bru_core.tracking.store import quote


def run_slug(*parts: str) -> str:
    """A registered-model name from names with '/', ':', '>' (a ramp) and '|' (a step) in
    them: quick-digits-mlp4-oru3to2, quick-digits-mlp4-oru3then2."""
    text = "-".join(parts)
    for old, new in (("/", "-"), (":", ""), (">", "to"), ("|", "then"), (" ", "")):
        text = text.replace(old, new)
    return text


def model_format(model: Any, example: Any) -> tuple[str, str | None]:
    """How a model is serialized, and why not pt2 when it is not.

    pt2 (torch.export): the graph of torch ops and the weights, no pickle, so loading it
    runs no code of the model's. Under torch.export, ERU/ORU take their eager formulas, not
    the native op or the compiled kernels (bru_core.kernels), so the graph needs nothing of
    bru's to load. Every model bru builds of torch.nn modules and bru's activations exports
    (tests/test_search.py checks each family); a model with any other module (a user's
    registered activation) is test-exported first, and one that torch.export cannot trace
    is logged as pickle (the reason returned): an explicit choice for that case."""
    import torch

    # By module name: tracking sits below the activations in the layering (docs/architecture.md).
    if all(type(m).__module__.startswith(("torch.nn.", "bru_core.")) for m in model.modules()):
        return "pt2", None
    try:
        torch.export.export(model, (torch.from_numpy(example),), dynamic_shapes=[{0: torch.export.Dim.AUTO}])
    except Exception as exc:  # torch.export raises plain RuntimeErrors, among others
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        return "pickle", f"{type(exc).__name__}: {first_line}"
    return "pt2", None


_DIGESTS: dict[int, str] = {}


def data_digest(data: Any) -> str:
    """A short sha256 of every split's images and labels (cached per Data object)."""
    key = id(data)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for split in (data.train, data.val, data.test):
            h.update(split.images.cpu().numpy().tobytes())
            h.update(split.labels.cpu().numpy().tobytes())
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


class _quiet_mlflow:
    """MLflow's INFO chatter (created version N...) is not for our users' terminals."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("mlflow")
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


class ModelLogging:
    """The model, data set and environment of a repeat's run, and model registration: part
    of ``Tracker``, which gives it the client and the store's URI."""

    client: MlflowClient
    uri: str

    def log_environment(self, run_id: str, device: str) -> None:
        """``environment.json`` and the version and device as tags. The commit is among
        MLflow's own tags, which every run gets when it is created (``runs.create_run``)."""
        record = environment(device)
        self.client.log_dict(run_id, record, "environment.json")
        self.client.log_batch(run_id, tags=[RunTag("bru.version", record["bru_lab"]), RunTag("bru.device", device)])

    def log_dataset(self, run_id: str, data: Any, source: str) -> str:
        """The training split as an MLflow dataset input, named and digested."""
        from mlflow.entities import DatasetInput, InputTag

        digest = data_digest(data)
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both local files
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(
                data.train.images.cpu().numpy(),
                targets=data.train.labels.cpu().numpy(),
                source=source,
                name=f"{data.info.name}-train",
                digest=digest,
            )
        context = InputTag(key="mlflow.data.context", value="training")
        self.client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), tags=[context])])
        return digest

    def log_model(self, run_id: str, model: Any, example: Any) -> str:
        """The trained model with its signature and an input example, serialized as
        ``model_format`` chooses (pt2 for every model bru builds); returns its model URI and
        tags the run ``bru.model_format``."""
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model = model.to("cpu").eval()
        example = np.ascontiguousarray(example.astype(np.float32))
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        serialization, problem = model_format(model, example)
        if problem is not None:
            logging.getLogger("bru.tracking").warning(
                "run %s: torch.export cannot trace the model (%s); it is logged pickled, and loading it runs "
                "code bundled with it",
                run_id, problem,
            )  # fmt: skip
        mlflow.set_tracking_uri(self.uri)
        with _quiet_mlflow(), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                serialization_format=serialization,
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
                # A pt2 graph holds only torch ops: no bru code is needed to load it, so none is
                # bundled (MLflow would put it on sys.path at every load). A pickle needs the classes.
                code_paths=[str(Path(bru_core.__file__).parent)] if serialization == "pickle" else None,
                metadata={"serialization_format": serialization},
            )
        self.client.set_tag(run_id, "bru.model_format", serialization)
        return info.model_uri

    def register(self, name: str, model_uri: str, run_id: str) -> int:
        """Register a model once: a version from the same run is reused."""
        try:
            versions = self.client.search_model_versions(f"name = {quote(name)}")
        except mlflow.exceptions.MlflowException:
            versions = []
        for version in versions:
            if version.run_id == run_id:
                return int(version.version)
        try:
            self.client.create_registered_model(name, tags={"bru.registered_by": "bru-lab"})
        except mlflow.exceptions.MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = self.client.create_model_version(
            name, model_uri, run_id=run_id, model_id=model_id, tags={"bru.run_id": run_id}
        )
        return int(version.version)
