"""The paper's released weights imported (model.learn.paper): posecoach's network computes what
the seed's own network computes with them (reference_outputs.npz, made by the seed's code), on
the path scoring runs; a state dict that does not fit is refused naming its tensors; the
paper's preprocessing; registration.

The weights are not part of the repository: they are read from ../shared/paper. Without them
the tests that need them fail under CI=true and are skipped otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_dct
from mlflow import MlflowClient

from model.data.labels import ec3d_classes
from model.data.normalize import Normalization, normalize
from model.data.sequence import Sequence
from model.learn import paper_dct
from model.learn.gcn import FeedbackGCN, GCNConfig, nodes_to_poses
from model.learn.paper import PaperWeightsError, convert, import_weights, kind_of, mapping
from model.learn.saved import CARD, TrainedModel
from model.serve.scoring import score

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "paper"
SHA256 = {
    "Ours.pt": "4637c6fd26d001d38dfad5bc1eeaa66c1f22a64d854d177f12f338f2b4850376",
    "Classifer.pt": "6dc071c62982bba272ac473140abca3011fc76a874119433cbdcd04aee344e98",
    "classifer_for_eval.pt": "cb88b30a1f9becca89e7c597fa06e5b5fd51da2cbe92db7269be66faf47263ed",
}
# The seed computed the reference in float32 with its own order of operations: the same
# network computed exactly (float64) differs from it by up to 1.4e-5 on deltas as large as 50.
# So: at most 1e-5, or a millionth of the array's largest magnitude where that is more.
TOLERANCE = 1e-5
RELATIVE = 1e-6


@pytest.fixture(scope="module")
def paper() -> Path:
    if not (PAPER / "reference_outputs.npz").is_file():
        message = f"{PAPER}: the paper's weights and reference outputs are not there"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return PAPER


@pytest.fixture(scope="module")
def reference(paper: Path) -> dict[str, np.ndarray]:
    with np.load(paper / "reference_outputs.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def saved_ours(paper: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Ours.pt imported, saved in the saved-model format and loaded back."""
    folder = import_weights(paper / "Ours.pt").save(tmp_path_factory.mktemp("ours") / "m")
    return TrainedModel.load(folder)


def assert_reproduces(ours: torch.Tensor | np.ndarray, reference: np.ndarray, what: str) -> None:
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == reference.shape, what
    allowed = max(TOLERANCE, RELATIVE * float(np.abs(reference).max()))
    worst = float(np.abs(ours - reference).max())
    assert worst <= allowed, f"{what}: max abs difference {worst:.3g} > {allowed:.3g}"


def reference_poses(reference: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The reference input as the raw 25-frame poses whose paper inputs it is."""
    rows = torch_dct.idct_2d(torch.from_numpy(reference["input_dct"]).double(), norm=None)
    return list(nodes_to_poses(rows.transpose(1, 2)).numpy().astype(np.float32))


def test_ours_computes_what_the_seed_computes_with_its_prediction_fed_back(saved_ours, reference):
    x = torch.from_numpy(reference["input_dct"])
    log_probs, deltas, attention = saved_ours.outputs(x)
    assert_reproduces(log_probs, reference["ours_log_probs"], "log-probabilities")
    assert_reproduces(deltas, reference["ours_deltas"], "deltas")
    assert_reproduces(attention, reference["ours_attention"], "attention")


def test_ours_computes_what_the_seed_computes_with_given_labels_fed_back(saved_ours, reference):
    x = torch.from_numpy(reference["input_dct"])
    fed = torch.nn.functional.one_hot(torch.from_numpy(reference["ours_true_labels"]), 12)
    _, deltas, attention = saved_ours.outputs(x, fed.float())
    assert_reproduces(deltas, reference["ours_deltas_true_label"], "deltas, given labels")
    assert_reproduces(attention, reference["ours_attention_true_label"], "attention, given")
    predicted = saved_ours.outputs(x)[1].numpy()
    assert np.abs(predicted - deltas.numpy()).max() > 1e-3  # the label fed back matters


@pytest.mark.parametrize(("file", "classifier_only", "key"), [
    ("Classifer.pt", False, "classifer_log_probs"),
    ("classifer_for_eval.pt", True, "classifer_for_eval_log_probs"),
])
def test_the_classifiers_compute_what_the_seed_computes(paper, reference, file, classifier_only,
                                                        key, tmp_path: Path):
    model = TrainedModel.load(import_weights(paper / file, classifier_only).save(tmp_path / "m"))
    assert model.config.variant == "separated_classifier"
    log_probs, deltas, attention = model.outputs(torch.from_numpy(reference["input_dct"]))
    assert_reproduces(log_probs, reference[key], file)
    assert attention is None and not deltas.any()


def test_scoring_runs_the_imported_network_on_raw_poses(saved_ours, reference):
    """The one scoring path: raw coordinates, the paper's inputs, the folded network."""
    poses = reference_poses(reference)
    inference = saved_ours.infer(poses)
    assert_reproduces(inference.log_probs, reference["ours_log_probs"], "infer log-probs")
    assert_reproduces(inference.deltas, reference["ours_deltas"], "infer deltas")
    assert_reproduces(inference.attention, reference["ours_attention"], "infer attention")
    seqs = [Sequence(poses=p, subject="s9", exercise="squat", skeleton="ec3d19", fps=30.0,
                     units="m", rep=i, source=f"ref{i}") for i, p in enumerate(poses)]
    names = [f"{e}/{label}" for e, label in ec3d_classes()]
    results = score(saved_ours, seqs)
    assert [r.error for r in results] == [None] * len(seqs)
    assert [r.predicted for r in results] == [
        names[i] for i in reference["ours_log_probs"].argmax(1)]
    expected = paper_dct.corrected(poses, torch.from_numpy(reference["ours_deltas"]),
                                   torch.from_numpy(reference["ours_attention"]))
    for result, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(result.corrected, want, atol=1e-4)


def test_the_card_says_where_the_model_came_from(paper, saved_ours):
    card = saved_ours.card()
    assert card["skeleton"] == "ec3d19"
    assert [tuple(c) for c in card["classes"]] == ec3d_classes()
    assert card["normalization"] == {"skeleton": "ec3d19", "fps": 30.0, "scale_by_body": False,
                                     "mode": "paper", "units": "m"}
    assert card["gcn"]["attention"] is True and card["gcn"]["hidden"] == 256
    origin = card["meta"]["origin"]
    assert origin["sha256"] == SHA256["Ours.pt"] == hashlib.sha256(
        (paper / "Ours.pt").read_bytes()).hexdigest()
    assert origin["network"] == "GCN_corr_class_ours"
    assert set(origin["unused_tensors"]) == {f"{layer}.{p}" for layer in ("gcin2", "gcout_class")
                                            for p in ("weight", "adj", "bias")}
    assert "2D DCT" in card["meta"]["preprocessing"]


def test_a_state_dict_that_does_not_fit_is_refused_naming_its_tensors(paper):
    state = torch.load(paper / "Ours.pt", map_location="cpu", weights_only=True)
    del state["linearLayer.weight"]
    state["gcatt.weight"] = state["gcatt.weight"][:-1]
    module = FeedbackGCN(GCNConfig(variant="full", n_nodes=57, n_classes=12, attention=True))
    with pytest.raises(PaperWeightsError) as err:
        convert(state, module, kind_of(state))
    assert "missing linearLayer.weight" in str(err.value)
    assert "gcatt.weight (256, 1) (expected (257, 1))" in str(err.value)


# --- without the paper's files --------------------------------------------------------------

def seed_state(hidden: int = 8, n_dct: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the seed's names and shapes for GCN_corr_class_ours, random values."""
    cfg = GCNConfig(variant="full", n_nodes=57, n_classes=12, hidden=hidden, n_dct=n_dct,
                    attention=True)
    target = FeedbackGCN(cfg).state_dict()
    gen = torch.Generator().manual_seed(seed)
    state = {seed_key: torch.rand(target[key].shape, generator=gen) + 0.5
             for key, (seed_key, how) in mapping("ours").items() if how != "zeros"}
    return {**state, "gcin2.weight": torch.zeros(1)}


def test_the_label_feature_moves_from_first_to_last_with_its_weights():
    state = seed_state()
    module = FeedbackGCN(GCNConfig(variant="full", n_nodes=57, n_classes=12, hidden=8,
                                   n_dct=5, attention=True))
    weights, unused = convert(state, module, "ours")
    w = state["gcbs1.gc1.weight"]
    assert torch.equal(weights["corrector.after.first.conv.weight"][-1, -1], w[0, 0])
    assert torch.equal(weights["corrector.after.first.conv.weight"][:-1, :-1], w[1:, 1:])
    norm = state["gcbs1.bn2.running_mean"].view(57, 9)
    assert torch.equal(weights["corrector.after.second.norm.running_mean"].view(57, 9)[:, -1],
                       norm[:, 0])
    assert torch.equal(weights["corrector.attention.weight"][-1], state["gcatt.weight"][0])
    assert not weights["classifier.conv.bias"].any()
    assert unused == ["gcin2.weight"]


def test_files_that_are_not_the_papers_networks_are_refused(tmp_path: Path):
    torch.save({"gcin.weight": torch.zeros(25, 8)}, tmp_path / "other.pt")
    with pytest.raises(PaperWeightsError, match="not one of the paper's networks"):
        import_weights(tmp_path / "other.pt")
    torch.save({"gcout.weight": torch.zeros(8, 25), "gcatt.weight": torch.zeros(8, 1)},
               tmp_path / "corrector.pt")
    with pytest.raises(PaperWeightsError, match="separate corrector"):
        import_weights(tmp_path / "corrector.pt")
    torch.save({"x": Sequence}, tmp_path / "code.pt")
    with pytest.raises(PaperWeightsError, match="weights_only=True"):
        import_weights(tmp_path / "code.pt")
    (tmp_path / "text.pt").write_text("not a state dict")
    with pytest.raises(PaperWeightsError, match="text.pt"):
        import_weights(tmp_path / "text.pt")


def test_the_papers_inputs_are_an_unnormalised_2d_dct_of_the_raw_rows():
    rng = np.random.default_rng(0)
    long, short = rng.normal(size=(40, 19, 3)), rng.normal(size=(12, 19, 3))
    x = paper_dct.encode([long.astype(np.float32), short.astype(np.float32)], 25).double()

    def dct_matrix(n: int) -> np.ndarray:  # unnormalised DCT-II: 2 sum_i x_i cos(pi k (2i+1)/2n)
        k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        return 2 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))

    for poses, got in ((long, x[0]), (short, x[1])):
        rows = poses.transpose(2, 1, 0).reshape(57, -1)  # x of every joint, then y, then z
        rows = np.pad(rows, ((0, 0), (0, max(0, 25 - rows.shape[1]))))
        want = dct_matrix(57) @ rows @ dct_matrix(rows.shape[1]).T
        np.testing.assert_allclose(got.numpy(), want[:, :25], rtol=1e-5, atol=1e-3)
    zero = torch.zeros(2, 57, 25)
    back = paper_dct.corrected([long, short], zero, None)
    np.testing.assert_allclose(back[0], long, atol=1e-6)
    full = paper_dct.corrected([np.zeros((25, 19, 3))], x[1:2], None)
    np.testing.assert_allclose(full[0][:12], short, atol=1e-4)


def test_paper_normalisation_keeps_raw_coordinates_in_the_models_units():
    rng = np.random.default_rng(1)
    poses = rng.normal(size=(30, 19, 3)).astype(np.float32) + 5.0
    seq = Sequence(poses=poses, subject="s1", exercise="squat", skeleton="ec3d19", fps=30.0,
                   units="cm")
    raw, scale = normalize(seq, Normalization(mode="paper", units="mm"))
    np.testing.assert_allclose(raw, poses * 10, rtol=1e-6)
    assert scale == 0.001
    with pytest.raises(ValueError, match="scale_by_body"):
        Normalization(mode="paper", scale_by_body=True)
    with pytest.raises(ValueError, match="mode 'x'"):
        Normalization(mode="x")


def test_import_paper_registers_the_model_with_its_origin(paper, mlflow_uri):
    from flows.models import import_paper

    result = import_paper(paper / "classifer_for_eval.pt", classifier_only=True)
    assert result["model"] == "posecoach-paper-classifer_for_eval-classifier"
    version = MlflowClient(mlflow_uri).get_model_version(result["model"], result["version"])
    assert version.tags["origin.sha256"] == SHA256["classifer_for_eval.pt"]
    assert json.loads(version.tags["normalization"])["mode"] == "paper"
    assert json.loads(version.tags["classes"])[0] == "squat/correct"
    card = json.loads((Path(result["model_dir"]) / CARD).read_text())
    assert card["meta"]["origin"]["classifier_only"] is True


def test_the_paper_protocol_evaluates_an_imported_model_without_training(paper, tmp_path: Path):
    from flows.paper import run_saved
    from model.data.ec3d_pickle import write_ec3d_pickle
    from model.data.synth import make_dataset

    pickle_path = write_ec3d_pickle(make_dataset(n_subjects=4, reps=1, seed=3),
                                    tmp_path / "data_3D.pickle")
    model = import_weights(paper / "Ours.pt").save(tmp_path / "ours")
    judge = import_weights(paper / "classifer_for_eval.pt", True).save(tmp_path / "judge")
    result = run_saved(pickle_path, model, judge, tmp_path / "work", synthetic=True)
    figures = result["variants"]["model"]
    assert result["data"]["synthetic"] is True and result["profile"] == "saved"
    assert figures["n"] == result["n_test"] == 11
    assert figures["correction"]["independent"]["macro"] is not None
    assert Path(figures["confusion_png"]).is_file()
    assert not (tmp_path / "work" / "judge").exists()  # nothing trained
