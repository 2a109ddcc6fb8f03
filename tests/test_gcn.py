"""The DCT, the node layout and the feedback GCN with its variants."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_dct

from model.learn.config import VARIANTS
from model.learn.dct import dct_decode, dct_encode, idct_basis
from model.learn.folded import BLOCK, FoldedGCN
from model.learn.gcn import (
    FeedbackGCN,
    GCNConfig,
    GraphConv,
    decode_poses,
    encode_poses,
    nodes_to_poses,
    poses_to_nodes,
)

torch.set_num_threads(1)
JOINTS, CLASSES = 7, 4  # deliberately not EC3D's 19 joints and 12 classes


def make(variant: str, dropout: float = 0.0) -> FeedbackGCN:
    torch.manual_seed(0)
    return FeedbackGCN(GCNConfig(n_nodes=3 * JOINTS, n_classes=CLASSES, n_dct=10, hidden=8,
                                 dropout=dropout, variant=variant))


def inputs(batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3 * JOINTS, 10, generator=g)
    onehot = torch.nn.functional.one_hot(torch.arange(batch) % CLASSES, CLASSES).float()
    return x, onehot


def test_dct_keeps_everything_when_coefficients_cover_the_length():
    x = torch.randn(2, 30, 5, dtype=torch.float64)
    coefs = dct_encode(x, 30)
    assert coefs.shape == (2, 5, 30)
    torch.testing.assert_close(dct_decode(coefs, 30), x)
    # orthonormal: the energy of each trajectory is kept
    torch.testing.assert_close(coefs.pow(2).sum(-1), x.pow(2).sum(1))


def test_dct_truncation_is_a_projection_and_smooth_motion_survives_it():
    t = torch.linspace(0, 1, 80, dtype=torch.float64)
    smooth = torch.stack([torch.sin(3 * t), torch.cos(2 * t)], -1)[None]
    back = dct_decode(dct_encode(smooth, 25), 80)
    assert (back - smooth).abs().max() < 0.02  # 2 % of the amplitude, worst at the ends
    noisy = smooth + 0.1 * torch.randn_like(smooth)
    assert (dct_decode(dct_encode(noisy, 25), 80) - smooth).pow(2).mean() < (
        (noisy - smooth).pow(2).mean()
    )


def test_short_sequences_are_padded_with_their_last_frame_and_cropped_back():
    x = torch.randn(3, 12, 4, dtype=torch.float64)
    coefs = dct_encode(x, 25)
    assert coefs.shape == (3, 4, 25)
    padded = torch.cat([x, x[:, -1:].expand(-1, 13, -1)], dim=1)
    torch.testing.assert_close(coefs, dct_encode(padded, 25))
    torch.testing.assert_close(dct_decode(coefs, 12), x)


@pytest.mark.parametrize("length", [12, 25, 61])
def test_idct_basis_is_the_decode_as_a_matrix(length: int):
    coefs = torch.randn(2, 6, 25, dtype=torch.float64)
    basis = idct_basis(length, 25, torch.float64)
    assert basis.shape == (length, 25)
    torch.testing.assert_close(basis @ coefs[1].T, dct_decode(coefs, length)[1])


def test_dct_matches_torch_dct_at_any_length():
    for length in (3, 25, 97):
        x = torch.randn(2, length, 5, dtype=torch.float64)
        padded = torch.cat([x, x[:, -1:].expand(-1, max(0, 25 - length), -1)], dim=1)
        expected = torch_dct.dct(padded.transpose(1, 2), norm="ortho")[..., :25]
        torch.testing.assert_close(dct_encode(x, 25), expected)
        full = torch.nn.functional.pad(expected, (0, max(length, 25) - 25))
        back = torch_dct.idct(full, norm="ortho").transpose(1, 2)[:, :length]
        torch.testing.assert_close(dct_decode(expected, length), back)


def test_idct_basis_hands_out_a_copy():
    idct_basis(30, 10).zero_()
    assert idct_basis(30, 10).abs().sum() > 0


def test_poses_of_mixed_lengths_encode_and_decode_like_one_at_a_time():
    g = torch.Generator().manual_seed(2)
    poses = [torch.randn(n, JOINTS, 3, generator=g).numpy() for n in (40, 7, 40, 33, 7, 61)]
    coefs = encode_poses(poses, 10)
    assert coefs.shape == (len(poses), 3 * JOINTS, 10)
    for c, p in zip(coefs, poses, strict=True):
        alone = dct_encode(poses_to_nodes(torch.from_numpy(p))[None], 10)[0]
        torch.testing.assert_close(c, alone)
    lengths = [len(p) + 5 for p in poses]
    decoded = decode_poses(coefs, lengths)
    for d, c, n in zip(decoded, coefs, lengths, strict=True):
        assert d.shape == (n, JOINTS, 3) and d.flags.c_contiguous
        np.testing.assert_allclose(d, nodes_to_poses(dct_decode(c[None], n))[0].numpy(),
                                   atol=1e-6)
    with pytest.raises(ValueError, match="lengths"):
        decode_poses(coefs, lengths[:-1])


def test_nodes_are_coordinate_major_and_invertible():
    poses = torch.randn(2, 5, JOINTS, 3)
    nodes = poses_to_nodes(poses)
    assert nodes.shape == (2, 5, 3 * JOINTS)
    torch.testing.assert_close(nodes[..., JOINTS + 2], poses[..., 2, 1])  # y of joint 2
    torch.testing.assert_close(nodes_to_poses(nodes), poses)


def test_graph_conv_is_adjacency_times_x_w_plus_b_and_learns_the_adjacency():
    torch.manual_seed(0)
    conv = GraphConv(4, 3, n_nodes=5)
    x = torch.randn(2, 5, 4)
    expected = torch.stack([conv.adjacency @ (xb @ conv.weight) + conv.bias for xb in x])
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).is_contiguous()
    conv(x).sum().backward()
    assert conv.adjacency.grad is not None and conv.adjacency.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_builds_and_runs_on_any_skeleton_and_class_count(variant: str):
    model = make(variant)
    x, onehot = inputs()
    model.train()
    log_probs, deltas = model(x, onehot, teacher_prob=0.5)
    assert log_probs.shape == (6, CLASSES) and deltas.shape == x.shape
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(6))
    (log_probs.sum() + deltas.sum()).backward()
    model.eval()
    log_probs, deltas = model(x)
    assert torch.isfinite(log_probs).all() and torch.isfinite(deltas).all()


def test_full_model_feeds_back_the_true_label_by_the_teacher_probability():
    model = make("full").train()
    x, onehot = inputs()
    other = onehot.roll(1, dims=1)
    _, taught = model(x, onehot, teacher_prob=1.0)
    _, taught_other = model(x, other, teacher_prob=1.0)
    assert not torch.allclose(taught, taught_other)
    _, own = model(x, onehot, teacher_prob=0.0)
    _, own_other = model(x, other, teacher_prob=0.0)
    torch.testing.assert_close(own, own_other)


def test_at_inference_the_full_model_feeds_back_its_own_prediction():
    model = make("full").eval()
    x, onehot = inputs()
    _, with_true = model(x, onehot, teacher_prob=1.0)
    _, without = model(x)
    torch.testing.assert_close(with_true, without)


def test_no_feedback_ignores_the_label_and_separated_classifier_corrects_nothing():
    model = make("no_feedback").train()
    x, onehot = inputs()
    torch.testing.assert_close(model(x, onehot, 1.0)[1], model(x, onehot.roll(1, 1), 1.0)[1])
    assert model.corrector.feedback is None
    log_probs, deltas = make("separated_classifier")(x)
    assert deltas.abs().sum() == 0 and make("separated_classifier").corrector is None


def test_separated_corrector_uses_the_given_label_else_none_and_has_no_classifier():
    model = make("separated_corrector").eval()
    x, onehot = inputs()
    log_probs, given = model(x, onehot)
    _, other = model(x, onehot.roll(1, 1))
    _, none = model(x)
    _, zeros = model(x, torch.zeros_like(onehot))
    assert not torch.allclose(given, other)
    torch.testing.assert_close(none, zeros)
    torch.testing.assert_close(log_probs, torch.full_like(log_probs, -torch.log(torch.tensor(4.0))))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_folded_forward_pass_gives_the_module_s_eval_outputs(variant: str):
    torch.manual_seed(0)
    # hidden 64: the corrector's 65 features after the fed-back label take the split product
    model = FeedbackGCN(GCNConfig(n_nodes=3 * JOINTS, n_classes=CLASSES, n_dct=10, hidden=64,
                                  variant=variant))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # batch norm statistics and affine terms far from 0 and 1
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            for t in (norm.running_mean, norm.weight, norm.bias):
                t.copy_(torch.randn(t.shape, generator=g))
            norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g) + 0.5)
    model.eval()
    x, onehot = inputs(batch=2 * BLOCK + 3)
    folded = FoldedGCN(model)
    for label in (None, onehot):
        with torch.no_grad():
            expected = model(x, label)
        for got, want in zip(folded(x, label), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert folded(x[:0])[0].shape == (0, CLASSES)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        GCNConfig(n_nodes=21, n_classes=3, variant="nope")
    with pytest.raises(ValueError, match="joints x 3"):
        GCNConfig(n_nodes=20, n_classes=3)


def test_layers_carry_no_literal_joint_or_class_counts():
    root = Path(__file__).resolve().parents[1] / "model" / "learn"
    for name in ("gcn.py", "folded.py", "train.py", "dct.py", "saved.py", "targets.py"):
        code = "\n".join(line.split("#")[0] for line in (root / name).read_text().splitlines())
        assert not re.search(r"\b(57|19|12)\b", code), f"model/learn/{name} hard-codes 57, 19 or 12"
