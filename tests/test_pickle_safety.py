"""EC3D's pickle is read only through the restricted unpickler: payloads never run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from model.data.ec3d_pickle import read_ec3d_pickle, safe_load, write_ec3d_pickle
from model.data.readers import iter_sequences
from model.data.sequence import SequenceError
from model.data.synth import make_dataset


class _Payload:
    """Pickles as a call of `func(arg)` when loaded."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _payloads(marker: Path) -> dict:
    import builtins
    import subprocess

    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').write('x')"),
        "subprocess.getoutput": _Payload(subprocess.getoutput, f"touch {marker}"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "subprocess.getoutput"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_pickle_refused_and_its_file_never_created(tmp_path, name, protocol):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    # the payload hides among valid EC3D data
    doc = {"poses": np.zeros((2, 3, 25)), "labels": np.ones((2, 5), dtype=np.int64),
           "extra": [payload]}
    path = tmp_path / "data_3D.pickle"
    path.write_bytes(pickle.dumps(doc, protocol=protocol))
    with pytest.raises(SequenceError) as err:
        list(iter_sequences(path))
    assert not marker.exists()
    assert err.value.kind == "unsafe_pickle"
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert f".{name.split('.')[-1]}" in str(err.value)  # names the refused global


def test_payload_in_a_folder_is_an_error_record_not_a_crash(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_payloads(marker)["os.system"]))
    out = list(iter_sequences(tmp_path))
    assert len(out) == 1 and isinstance(out[0], SequenceError)
    assert "evil.pkl" in str(out[0]) and not marker.exists()


def test_object_array_carrying_a_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = _payloads(marker)["os.system"]
    path = tmp_path / "obj.pickle"
    path.write_bytes(pickle.dumps({"poses": arr, "labels": arr}))
    with pytest.raises(SequenceError, match="refused"):
        safe_load(path)
    assert not marker.exists()


def test_corrupt_and_wrong_layout_pickles_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pickle"
    corrupt.write_bytes(pickle.dumps({"poses": np.zeros(3)})[:-7])
    wrong = tmp_path / "wrong.pickle"
    wrong.write_bytes(pickle.dumps({"poses": np.zeros((4, 25, 3)), "labels": []}))
    for path in (corrupt, wrong):
        with pytest.raises(SequenceError) as err:
            list(read_ec3d_pickle(path))
        assert str(path) in str(err.value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_ec3d_pickles_of_every_protocol_load(tmp_path, protocol):
    seqs = make_dataset(1, 1, seed=4, exercises=("lunge",))
    path = write_ec3d_pickle(seqs, tmp_path / "ours.pickle")
    data = safe_load(path)
    data["labels"] = data["labels"].astype(object)  # ids as Python ints, as older dumps hold
    data["labels"][:, 0] = np.where(data["labels"][:, 0] == 1, "Lunges", "?")
    again = tmp_path / f"p{protocol}.pickle"
    again.write_bytes(pickle.dumps(data, protocol=protocol))
    back = list(read_ec3d_pickle(again))
    assert [(s.exercise, s.label, s.rep, s.subject) for s in back] == [
        (s.exercise, s.label, s.rep, s.subject) for s in seqs]
    assert all(np.array_equal(a.poses, b.poses, equal_nan=True) for a, b in zip(seqs, back,
                                                                               strict=True))
