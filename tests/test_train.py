"""Targets and training: learning, determinism, resuming, variants, the loss terms."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.data.card import DatasetCard
from model.data.normalize import Normalization, normalize
from model.data.sequence import Sequence, SequenceError
from model.data.skeletons import get_skeleton
from model.learn.config import PLACEMENT, TrainConfig
from model.learn.gcn import GCNConfig, encode_poses
from model.learn.softdtw import soft_dtw_divergence
from model.learn.targets import NO_TARGET, pair_targets
from model.learn.train import (
    CHECKPOINT,
    divergence_to_targets,
    self_terms,
    smoothness,
    train,
)
from model.settings import PROFILES, run_config

torch.set_num_threads(1)
UPPER = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
         "mid_hip", "r_hip", "l_hip")  # fmt: skip
TINY = TrainConfig(epochs=3, batch_size=8, hidden=16, n_dct=10, dropout=0.1, threads=1)


def toy_sequences(reps: int = 4, seed: int = 0, subjects: tuple[str, ...] = ("s1", "s2"),
                  depths: dict[str, float] | None = None) -> list[Sequence]:
    """Squats that differ only in depth: "correct" ones go low, "not_low_enough" ones barely move.

    The upper body moves down relative to the feet (a visible difference after centring on the
    mid-hip), with a little noise; lengths vary from 30 to 44 frames.
    """
    depths = depths or {"correct": 0.35, "not_low_enough": 0.05}
    sk = get_skeleton("ec3d19")
    rng = np.random.default_rng(seed)
    upper = [sk.index(j) for j in UPPER]
    out = []
    for subject in subjects:
        base = rng.normal(0.0, 0.15, (sk.n_joints, 3)) + [0.0, 0.0, 0.9]
        base[sk.index("l_hip")] = [0.0, 0.12, 0.9]
        base[sk.index("r_hip")] = [0.0, -0.12, 0.9]
        base[sk.index("mid_hip")] = [0.0, 0.0, 0.9]
        for label, depth in depths.items():
            for rep in range(reps):
                frames = int(rng.integers(30, 45))
                poses = np.repeat(base[None], frames, axis=0)
                dip = depth * (1 + 0.1 * rng.normal()) * np.sin(np.linspace(0, np.pi, frames))
                poses[:, upper, 2] -= dip[:, None]
                poses += rng.normal(0.0, 0.005, poses.shape)
                out.append(Sequence(poses.astype(np.float32), subject, "squat", label=label,
                                    rep=rep, source=f"toy/{subject}/{label}/{rep}"))
    return out


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.module.state_dict().items()}


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def toy() -> list[Sequence]:
    return toy_sequences()


def test_profiles_give_the_papers_hyper_parameters_at_nightly():
    cfg = run_config(PROFILES["nightly"], variant="full", seed=3)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_decay, cfg.lr_step) == (50, 32, 0.01, 0.9, 5)
    assert (cfg.dropout, cfg.grad_clip, cfg.beta, cfg.smooth_weight) == (0.5, 1.0, 1.0, 1e-3)
    assert (cfg.hidden, cfg.n_dct, cfg.seed) == (256, 25, 3)
    assert run_config(PROFILES["nightly"], variant="no_smoothness").smooth_weight == 0.0
    with pytest.raises(ValueError, match="unknown variant"):
        run_config(PROFILES["test"], variant="bogus")


def test_a_run_config_takes_the_dataset_and_overrides_and_workers_change_only_placement():
    card = DatasetCard("uiprmd", motion_only=True, beta=0.3)
    cfg = run_config(PROFILES["demo"], card, seed=4, threads=2, epochs=1, beta=0.1)
    assert cfg.motion_only and (cfg.epochs, cfg.beta, cfg.seed, cfg.threads) == (1, 0.1, 4, 2)
    assert (cfg.hidden, cfg.lr_decay) == (PROFILES["demo"].train.hidden, 0.8)
    assert not run_config(PROFILES["demo"], DatasetCard("ec3d", motion_only=False)).motion_only
    placed = cfg.placed(device="cuda")
    assert (placed.device, placed.threads) == ("cuda", 2)
    assert {k: v for k, v in placed.to_dict().items() if k not in PLACEMENT} == \
        {k: v for k, v in cfg.to_dict().items() if k not in PLACEMENT}
    net = GCNConfig.for_data(cfg, n_nodes=57, n_classes=11)
    assert (net.n_dct, net.hidden, net.dropout, net.variant) == (
        cfg.n_dct, cfg.hidden, cfg.dropout, cfg.variant)


def test_a_correct_input_is_its_own_target_and_others_get_the_nearest_correct_rep():
    seqs = toy_sequences(reps=1, subjects=("s1",),
                         depths={"correct": 0.35, "not_low_enough": 0.3})
    seqs += toy_sequences(reps=1, subjects=("s1",), seed=0, depths={"correct": 0.05})
    # s1: correct deep (0), not-low-enough at 0.3 (1), correct shallow (2)
    for s, rep in zip(seqs, (0, 1, 2), strict=True):
        s.rep = rep
    norm = Normalization()
    poses = [normalize(s, norm)[0] for s in seqs]
    assert pair_targets(poses, seqs) == [0, 0, 2]


def test_targets_fall_back_to_other_subjects_then_to_none():
    seqs = toy_sequences(reps=1, subjects=("s1", "s2"))
    seqs = [s for s in seqs if not (s.subject == "s2" and s.label == "correct")]
    lunge = replace(seqs[0], exercise="lunge", label="not_low_enough")
    seqs.append(lunge)
    poses = [normalize(s, Normalization())[0] for s in seqs]
    targets = pair_targets(poses, seqs)
    s1_correct = next(i for i, s in enumerate(seqs) if s.subject == "s1" and s.label == "correct")
    s2_wrong = next(i for i, s in enumerate(seqs) if s.subject == "s2")
    assert targets[s2_wrong] == s1_correct
    assert targets[-1] == NO_TARGET
    with pytest.raises(ValueError, match="pose arrays"):
        pair_targets(poses[:-1], seqs)


def test_divergence_with_precomputed_target_terms_equals_the_divergence():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 20, 6, generator=g), torch.randn(3, 17, 6, generator=g)
    xl, yl = torch.tensor([20, 14, 9]), torch.tensor([17, 17, 11])
    expected = soft_dtw_divergence(x.double(), y.double(), xl, yl, gamma=0.01)
    got = divergence_to_targets(x, xl, y, yl, self_terms(y, yl, 0.01), 0.01)
    torch.testing.assert_close(got, expected)


def test_label_smoothing_spreads_a_share_of_each_label_over_the_classes(toy):
    from model.learn.train import class_loss

    log_probs = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]), dim=1)
    labels = torch.tensor([0, 2])
    nll = torch.nn.functional.nll_loss(log_probs, labels)
    assert class_loss(log_probs, nll, 0.0) is nll
    expected = torch.nn.functional.cross_entropy(log_probs, labels, label_smoothing=0.3)
    smoothed = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(class_loss(log_probs, nll, 0.3),
                               -(smoothed * log_probs).sum(dim=1).mean())
    assert expected.item() == pytest.approx(class_loss(log_probs, nll, 0.3).item(), rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        replace(TINY, label_smoothing=1.0)


def test_smoothness_ignores_padding():
    motion = torch.zeros(2, 5, 3)
    motion[0, :, 0] = torch.arange(5.0)  # steps of 1 on one of 3 features
    motion[1, :3, 0] = torch.arange(3.0)
    motion[1, 3:] = 100.0  # padding beyond length 3
    torch.testing.assert_close(smoothness(motion, torch.tensor([5, 3])),
                               torch.tensor([1 / 3, 1 / 3]))


def test_training_lowers_the_loss_and_learns_a_separable_task(toy):
    cfg = replace(TINY, epochs=12)
    model = train(toy, cfg, progress=False)
    history = model.meta["history"]
    assert len(history) == 12
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["nll"] < history[0]["nll"]
    assert history[-1]["sdtw"] < history[0]["sdtw"]
    unseen = toy_sequences(reps=3, seed=7, subjects=("s3",))
    pred = model.classify_and_correct(unseen).log_probs.argmax(1)
    truth = [model.classes.index((s.exercise, s.label)) for s in unseen]
    assert (pred == np.array(truth)).mean() >= 0.9


def test_same_seed_same_weights_other_seed_other_weights(toy):
    a = train(toy, TINY, progress=False)
    b = train(toy, TINY, progress=False)
    assert_same_weights(a, b)
    c = train(toy, replace(TINY, seed=1), progress=False)
    assert not torch.equal(weights(a)["trunk.conv.weight"], weights(c)["trunk.conv.weight"])


class Killed(Exception):
    pass


def test_a_killed_training_resumes_from_its_checkpoint_to_the_same_weights(toy, tmp_path: Path):
    whole = train(toy, TINY, progress=False)

    def die_after_first(row: dict) -> None:
        if row["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train(toy, TINY, checkpoint_dir=tmp_path, progress=False, on_epoch=die_after_first)
    epochs_run = []
    resumed = train(toy, TINY, checkpoint_dir=tmp_path, progress=False,
                    on_epoch=lambda row: epochs_run.append(row["epoch"]))
    assert epochs_run == [2, 3]
    assert [h["epoch"] for h in resumed.meta["history"]] == [1, 2, 3]
    assert_same_weights(whole, resumed)
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 3


def test_a_checkpoint_from_other_data_or_settings_is_refused(toy, tmp_path: Path):
    train(toy, replace(TINY, epochs=1), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train(toy, replace(TINY, epochs=1, hidden=8), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train(toy[:-1], replace(TINY, epochs=1), checkpoint_dir=tmp_path, progress=False)


@pytest.mark.parametrize("variant", ["separated_classifier", "separated_corrector",
                                     "no_feedback", "no_smoothness"])
def test_every_variant_trains(toy, variant: str):
    cfg = run_config(PROFILES["test"], variant=variant, threads=1)
    model = train(toy, replace(cfg, epochs=1, hidden=16, n_dct=10), progress=False)
    row = model.meta["history"][0]
    assert ("nll" in row) == (variant != "separated_corrector")
    assert ("sdtw" in row) == (variant != "separated_classifier")
    assert np.isfinite(row["loss"])
    assert model.config.variant == variant == model.module.config.variant


def test_unlabelled_or_too_few_sequences_are_refused(toy):
    with pytest.raises(SequenceError, match="toy/s1/correct/0: no label"):
        train([toy[0].with_label(None), *toy[1:]], TINY, progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        train(toy[:1], TINY, progress=False)
    with pytest.raises(ValueError, match="no batch of two or more per worker"):
        train(toy, TINY, progress=False, shard=(0, 8))


def test_motion_only_ignores_the_mean_pose_and_still_corrects_the_whole_input(toy):
    model = train(toy, replace(TINY, motion_only=True), progress=False)
    assert torch.count_nonzero(model.module.trunk.conv.weight[0]) == 0
    assert torch.count_nonzero(model.module.trunk.conv.weight[1:]) > 0
    poses = [normalize(s, Normalization())[0] for s in toy[:4]]
    offset = np.random.default_rng(0).normal(0.0, 0.2, (1, poses[0].shape[1], 3))
    shifted = [(p + offset).astype(np.float32) for p in poses]
    plain, moved = model.infer(poses), model.infer(shifted)
    np.testing.assert_allclose(moved.log_probs, plain.log_probs, atol=1e-5)
    for a, b in zip(plain.corrected, moved.corrected, strict=True):
        np.testing.assert_allclose(b - a, np.broadcast_to(offset, a.shape), atol=1e-4)
    seen = train(toy, TINY, progress=False)
    assert not np.allclose(seen.infer(shifted).log_probs, seen.infer(poses).log_probs,
                           atol=1e-5)


def test_tail_averaging_keeps_the_mean_of_the_last_epochs_weights_and_resumes(toy,
                                                                              tmp_path: Path):
    config = replace(TINY, average_tail=2 / 3)
    assert config.averaging_from == 2 and replace(TINY, average_tail=0.0).averaging_from is None
    params = {}

    def record(row: dict) -> None:
        ckpt = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)
        params[row["epoch"]] = ckpt["model"]

    averaged = train(toy, config, checkpoint_dir=tmp_path / "whole", progress=False,
                     on_epoch=record)
    kept = weights(averaged)
    for name, _ in averaged.module.named_parameters():
        torch.testing.assert_close(kept[name], (params[2][name] + params[3][name]) / 2)
    norm = "trunk.norm.running_mean"
    assert not torch.allclose(kept[norm], params[3][norm])  # measured again for the mean weights
    plain = train(toy, TINY, progress=False)
    assert not torch.equal(kept["trunk.conv.weight"], weights(plain)["trunk.conv.weight"])

    def die_in_the_tail(row: dict) -> None:
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(toy, config, checkpoint_dir=tmp_path / "cut", progress=False,
              on_epoch=die_in_the_tail)
    assert_same_weights(averaged, train(toy, config, checkpoint_dir=tmp_path / "cut",
                                        progress=False))
    with pytest.raises(ValueError, match="average_tail"):
        replace(TINY, average_tail=1.5)


def test_tail_averaging_measures_batch_norm_over_shuffled_batches(toy):
    """The trunk's batch norm sees the DCT inputs through one graph conv (no dropout before it):
    after averaging, its running variance is that of the whole training data, not the smaller
    one of batches that hold one subject and one class each (the data's order)."""
    model = train(toy, replace(TINY, average_tail=2 / 3, batch_size=4), progress=False)
    norm = model.module.trunk.norm
    poses = [normalize(s, Normalization())[0] for s in toy]
    with torch.no_grad():
        y = model.module.trunk.conv(encode_poses(poses, TINY.n_dct)).flatten(1)
    ratio = (norm.running_var / y.var(dim=0)).median()
    assert 0.7 < ratio < 1.3
    torch.testing.assert_close(norm.running_mean, y.mean(dim=0), atol=0.3 * y.std(dim=0).max(),
                               rtol=0)
