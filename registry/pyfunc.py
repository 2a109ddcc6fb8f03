"""The packaged model: an MLflow "model from code" around a saved model folder.

Logging copies registry/pyfunc_code.py (which defines the python model) and the saved folder
(model.safetensors + model.json, as the artifact `model_dir`); loading runs that file and reads
JSON and safetensors: nothing is unpickled. The model/ and registry/ packages travel with it as
code paths, so a fresh process needs only the pinned requirements.

Input: a DataFrame, one row per repetition or session —

    poses      list of floats, the (frames, joints, 3) positions flattened frame by frame
    frames     int, number of frames
    joints     int, joints per frame (the skeleton's)
    skeleton   str, e.g. "ec3d19", "coco17" (must match or map onto the model's)
    fps        float
    units      str, "m", "cm" or "mm"
    subject    str
    exercise   str, "squat", "lunge" or "plank"
    session_id str, optional (default: "row<i>")
    kind       str, optional: "session" (default; cut into repetitions first) or "repetition"

Output: a DataFrame, one row per repetition found (a row that could not be scored gives one row
with `error` and `error_kind`): input (row index), session_id, rep, sequence_id, predicted
("exercise/label"), label, confidence, unsure, exercise_mismatch, feedback (words),
probabilities and deviations (JSON), corrected (flat list, the model's normalised frame),
corrected_frames, corrected_joints, error, error_kind.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import Array, ColSpec, DataType, Schema

import model as model_package
from model.data.sequence import Sequence, SequenceError
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult, score, score_session

CODE_FILE = Path(__file__).with_name("pyfunc_code.py")
REQUIREMENTS = ("mlflow", "torch", "torch-dct", "numpy", "scipy", "pandas", "safetensors", "tqdm")
KINDS = ("session", "repetition")

INPUT_SCHEMA = Schema([
    ColSpec(Array(DataType.double), "poses"),
    ColSpec(DataType.long, "frames"),
    ColSpec(DataType.long, "joints"),
    ColSpec(DataType.string, "skeleton"),
    ColSpec(DataType.double, "fps"),
    ColSpec(DataType.string, "units"),
    ColSpec(DataType.string, "subject"),
    ColSpec(DataType.string, "exercise"),
    ColSpec(DataType.string, "session_id", required=False),
    ColSpec(DataType.string, "kind", required=False),
])
OUTPUT_SCHEMA = Schema([
    ColSpec(DataType.long, "input"),
    ColSpec(DataType.string, "session_id"),
    ColSpec(DataType.long, "rep"),
    ColSpec(DataType.string, "sequence_id"),
    ColSpec(DataType.string, "predicted", required=False),
    ColSpec(DataType.string, "label", required=False),
    ColSpec(DataType.double, "confidence", required=False),
    ColSpec(DataType.boolean, "unsure", required=False),
    ColSpec(DataType.boolean, "exercise_mismatch", required=False),
    ColSpec(DataType.string, "feedback"),
    ColSpec(DataType.string, "probabilities"),
    ColSpec(DataType.string, "deviations"),
    ColSpec(Array(DataType.double), "corrected", required=False),
    ColSpec(DataType.long, "corrected_frames"),
    ColSpec(DataType.long, "corrected_joints"),
    ColSpec(DataType.string, "error", required=False),
    ColSpec(DataType.string, "error_kind", required=False),
])
SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA)


def to_row(seq: Sequence, kind: str = "session") -> dict:
    """One input row for a sequence (a session, or one repetition with kind="repetition")."""
    poses = np.asarray(seq.poses, dtype=np.float64)
    return {
        "poses": poses.reshape(-1).tolist(),
        "frames": int(poses.shape[0]),
        "joints": int(poses.shape[1]),
        "skeleton": seq.skeleton,
        "fps": float(seq.fps),
        "units": seq.units,
        "subject": str(seq.subject),
        "exercise": seq.exercise,
        "session_id": str(seq.meta.get("session_id") or seq.source or ""),
        "kind": kind,
    }


def to_frame(seqs: list[Sequence], kind: str = "session") -> pd.DataFrame:
    """The input DataFrame for sequences, all of one kind."""
    return pd.DataFrame([to_row(s, kind) for s in seqs], columns=INPUT_SCHEMA.input_names())


def _text(row: pd.Series, key: str, default: str = "") -> str:
    """A text cell; missing (absent, None or NaN) reads as `default`."""
    value = row.get(key, default)
    return default if value is None or pd.isna(value) else str(value)


def from_row(row: pd.Series, index: int) -> tuple[Sequence, str]:
    """The sequence and kind a row describes; SequenceError naming the row when it can't be."""
    source = _text(row, "session_id") or f"row{index}"
    kind = _text(row, "kind", "session") or "session"
    if kind not in KINDS:
        raise SequenceError(source, f"kind {kind!r} is neither {' nor '.join(KINDS)}", "bad_kind")
    values = np.asarray(row["poses"], dtype=np.float64)
    frames, joints = int(row["frames"]), int(row["joints"])
    if values.ndim != 1 or values.size != frames * joints * 3:
        raise SequenceError(source, f"poses hold {values.size} values, not frames x joints x 3 = "
                            f"{frames} x {joints} x 3", "bad_shape")
    seq = Sequence(
        poses=values.reshape(frames, joints, 3).astype(np.float32), subject=_text(row, "subject"),
        exercise=_text(row, "exercise"), skeleton=_text(row, "skeleton"), fps=float(row["fps"]),
        units=_text(row, "units", "m"), source=source, meta={"session_id": source},
    )
    return seq, kind


def _output_row(index: int, session_id: str, result: RepResult) -> dict:
    d = result.to_dict()
    corrected = result.corrected
    return {
        "input": index,
        "session_id": session_id,
        "rep": int(d["rep"]),
        "sequence_id": d["sequence_id"],
        "predicted": d["predicted"],
        "label": d["label"],
        "confidence": d["confidence"],
        "unsure": d["unsure"],
        "exercise_mismatch": d["exercise_mismatch"],
        "feedback": " ".join(d["cues"]),
        "probabilities": json.dumps(d["probabilities"]),
        "deviations": json.dumps(d["deviations"]),
        "corrected": None if corrected is None else corrected.astype(np.float64).ravel().tolist(),
        "corrected_frames": 0 if corrected is None else int(corrected.shape[0]),
        "corrected_joints": 0 if corrected is None else int(corrected.shape[1]),
        "error": d["error"],
        "error_kind": d["error_kind"],
    }


def _error_row(index: int, exc: SequenceError) -> dict:
    return {"input": index, "session_id": exc.source, "rep": 0, "sequence_id": "",
            "feedback": "", "probabilities": "{}", "deviations": "[]", "corrected": None,
            "corrected_frames": 0, "corrected_joints": 0, "error": str(exc),
            "error_kind": exc.kind}


def predict_frame(trained: TrainedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Score every row of an input DataFrame with model/'s one scoring path."""
    rows: list[dict] = []
    for index, (_, row) in enumerate(frame.iterrows()):
        try:
            seq, kind = from_row(row, index)
            results = (score_session(trained, seq) if kind == "session"
                       else score(trained, [seq]))
        except SequenceError as exc:
            rows.append(_error_row(index, exc))
            continue
        rows += [_output_row(index, seq.source, r) for r in results]
    return pd.DataFrame(rows, columns=OUTPUT_SCHEMA.input_names())


def requirements() -> list[str]:
    """The packaged model's pip requirements, pinned to what is installed here."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]


def code_paths() -> list[str]:
    """The packages the model from code imports: model/ and registry/."""
    return [str(Path(model_package.__file__).parent), str(Path(__file__).parent)]


def log_packaged_model(run_id: str, model_dir: str | Path, example: Sequence,
                       name: str = "model") -> ModelInfo:
    """Log the saved folder as a pyfunc (model from code) in the run `run_id`; `example` (a
    session of the model's skeleton) becomes its input example."""
    with mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(CODE_FILE),
            artifacts={"model_dir": str(model_dir)},
            signature=SIGNATURE,
            input_example=to_frame([example]),
            code_paths=code_paths(),
            pip_requirements=requirements(),
        )
