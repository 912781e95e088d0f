"""A kserve.Model that serves one scikit-learn artifact like kserve-sklearnserver v0.20.0.

Same loading rule (exactly one .joblib/.pkl/.pickle file in the model directory), same
PREDICT_PROBA switch and same V1/V2 responses. The difference: requests are validated first,
so bad input is a 400 that says what was wrong (upstream answers 500 for most of it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import sklearn
from kserve import Model
from kserve.errors import InferenceError, InvalidInput, ModelMissingError
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.utils.utils import get_predict_response

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")
ENV_PREDICT_PROBA = "PREDICT_PROBA"
V2_NUMERIC = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}
V2_NUMERIC |= {"UINT8", "UINT16", "UINT32", "UINT64"}
# Written beside the artifact by kserve_gitops.lifecycle.train (the runtime ignores it).
METADATA = "metadata.json"


def find_model_file(model_dir: Path) -> Path:
    """The single model file in model_dir; an error if there is none or more than one."""
    if not model_dir.is_dir():
        raise ModelMissingError(f"{model_dir} is not a directory")
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in MODEL_EXTENSIONS)
    if not files:
        raise ModelMissingError(f"no {'/'.join(MODEL_EXTENSIONS)} file in {model_dir}")
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise RuntimeError(f"more than one model file in {model_dir} ({names}); only one allowed")
    return files[0]


def check_pickled_by_this_sklearn(model_file: Path) -> None:
    """Refuse an artifact whose metadata says another scikit-learn pickled it: scikit-learn does
    not support unpickling across versions, and the runtime in the cluster runs one version."""
    meta = model_file.parent / METADATA
    if not meta.is_file():
        return  # an artifact from elsewhere: nothing recorded to compare
    try:
        built = (json.loads(meta.read_text()).get("versions") or {}).get("scikit_learn")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise RuntimeError(f"{meta} is not a metadata object: {exc}") from exc
    if built and built != sklearn.__version__:
        raise RuntimeError(
            f"{model_file.name} was pickled by scikit-learn {built} ({meta.name}); this server "
            f"runs {sklearn.__version__}: retrain with `make train` under the pinned version"
        )


def predict_proba_enabled() -> bool:
    return os.environ.get(ENV_PREDICT_PROBA, "false").lower() == "true"


class SKLearnModel(Model):
    """model_dir is a local directory: in the cluster KServe's storage initializer has already
    copied storageUri there, so unlike upstream there is no Storage.download step."""

    def __init__(self, name: str, model_dir: str | Path):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.model_file: Path | None = None
        self.n_features: int | None = None
        self.ready = False

    def load(self) -> bool:
        self.model_file = find_model_file(self.model_dir)
        check_pickled_by_this_sklearn(self.model_file)
        self._model = joblib.load(self.model_file)
        self.n_features = getattr(self._model, "n_features_in_", None)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, self.n_features or -1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        if predict_proba_enabled() and hasattr(self._model, "predict_proba"):
            n_classes = len(getattr(self._model, "classes_", [])) or -1
            return [{"name": "output-0", "datatype": "FP64", "shape": [-1, n_classes]}]
        classes = np.asarray(getattr(self._model, "classes_", []))
        kind = {"i": "INT64", "u": "INT64", "U": "BYTES", "O": "BYTES"}.get(classes.dtype.kind)
        return [{"name": "output-0", "datatype": kind or "FP64", "shape": [-1]}]

    async def preprocess(
        self, payload: dict | InferRequest | bytes, headers: dict[str, str] | None = None
    ) -> dict | InferRequest:
        # KServe hands V1 bodies with a non-JSON content type (curl -d's default) over as raw
        # bytes; accept them if they parse as JSON instead of failing later with a 500.
        if isinstance(payload, bytes | str):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                kind = (headers or {}).get("content-type", "none")
                raise InvalidInput(
                    f"request body is not JSON (content-type {kind}): {exc}"
                ) from exc
        return payload

    def predict(
        self, payload: dict | InferRequest, headers: dict[str, str] | None = None
    ) -> dict | InferResponse:
        features = self.features(payload)
        try:
            if predict_proba_enabled() and hasattr(self._model, "predict_proba"):
                result = self._model.predict_proba(features)
            else:
                result = self._model.predict(features)
        except Exception as exc:  # input was validated: what is left is a server-side fault
            raise InferenceError(str(exc)) from exc
        return get_predict_response(payload, result, self.name)

    def features(self, payload: Any) -> np.ndarray:
        """The request's rows as a 2-D float array, or InvalidInput naming what is wrong."""
        if isinstance(payload, InferRequest):
            return self._v2_features(payload)
        if not isinstance(payload, dict):
            raise InvalidInput(
                'request body must be a JSON object such as {"instances": [[5.1, 3.5, 1.4, 0.2]]}'
            )
        key = "inputs" if "inputs" in payload else "instances"
        if key not in payload:
            example = f'{{"instances": [[...{self._width()} numbers], ...]}}'
            raise InvalidInput(f'missing "instances": expected {example}')
        return self._rows(payload[key], key)

    def _width(self) -> str:
        return str(self.n_features) if self.n_features else "N"

    def _rows(self, rows: Any, key: str) -> np.ndarray:
        if not isinstance(rows, list) or not rows:
            raise InvalidInput(f'"{key}" must be a non-empty list of rows, got {_show(rows)}')
        try:
            array = np.asarray(rows)
        except ValueError:  # ragged rows: numpy refuses them; the scan below says which
            array = None
        if (
            array is not None
            and array.dtype.kind in "iuf"
            and array.ndim == 2
            and array.shape[1] == (self.n_features or array.shape[1])
        ):
            return array.astype(np.float64, copy=False)
        # Slow path only for bad requests: find the first offending row and value.
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise InvalidInput(
                    f"{key}[{i}]: expected a list of {self._width()} numbers, got {_show(row)}"
                )
            if self.n_features and len(row) != self.n_features:
                raise InvalidInput(
                    f"{key}[{i}]: expected {self.n_features} features, got {len(row)}"
                )
            for j, value in enumerate(row):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"{key}[{i}][{j}]: expected a number, got {_show(value)}")
        raise InvalidInput(f'"{key}": rows must all have the same number of features')

    def _v2_features(self, request: InferRequest) -> np.ndarray:
        if len(request.inputs) != 1:
            raise InvalidInput(
                f'"inputs" must hold exactly one tensor of shape [N, {self._width()}], '
                f"got {len(request.inputs)}"
            )
        tensor = request.inputs[0]
        where = f'inputs[0] ("{tensor.name}")'
        if tensor.datatype not in V2_NUMERIC:
            raise InvalidInput(
                f"{where}: datatype must be numeric (FP32, FP64, INT64, ...), got {tensor.datatype}"
            )
        shape = list(tensor.shape)
        if len(shape) != 2 or shape[0] < 1 or (self.n_features and shape[1] != self.n_features):
            raise InvalidInput(f"{where}: shape must be [N, {self._width()}], got {shape}")
        try:
            array = tensor.as_numpy()
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"{where}: data does not fit shape {shape} of {tensor.datatype}: {exc}"
            ) from exc
        return array.astype(np.float64, copy=False)


def _show(value: Any, limit: int = 60) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."
