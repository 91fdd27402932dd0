"""AMSRC-Net, its losses and per-object scores (network.py, losses.py, inference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amsrc.config import ModelConfig, TrainConfig
from amsrc.errors import ConfigError, DataError
from amsrc.model.inputs import to_channels_last, to_tensors, uses_channels_last
from amsrc.model.losses import (
    amsrc_loss,
    consistency_distance,
    consistency_loss,
    decay_weights,
    gradient_loss,
    intensity_loss,
    weight_decay_loss,
)
from amsrc.model.network import NetOutput, build_model, variant_names
from amsrc.scoring import ObjectScores, object_scores

torch.set_num_threads(1)
TINY = ModelConfig.WIDTH_PRESETS["tiny"]


def _model(variant="amsrc", widths=TINY, channels=1, seed=0, standardise=True, consistency="cosine"):
    torch.manual_seed(seed)
    return build_model(ModelConfig(variant=variant, widths=widths, standardise=standardise, consistency=consistency),
                       channels, 32)


def _cubes(n, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    app = rng.integers(0, 256, (n, 5, 32, 32, channels), dtype=np.uint8)
    flow = (rng.normal(size=(n, 4, 32, 32, 2)) * 3).astype(np.float16)
    return app, flow


# ---------------------------------------------------------------- network
def test_variants_registered():
    assert variant_names() == ["amsrc", "baseline", "nogate"]


@pytest.mark.parametrize("variant", ["amsrc", "nogate", "baseline"])
@pytest.mark.parametrize("preset", sorted(ModelConfig.WIDTH_PRESETS))
def test_shapes_and_finite(variant, preset):
    widths = ModelConfig.WIDTH_PRESETS[preset]
    for channels in (1, 3):
        model = _model(variant, widths, channels)
        app = torch.rand(2, 4 * channels, 32, 32)
        flow = torch.randn(2, 8, 32, 32)
        out = model(app, flow)
        assert isinstance(out, NetOutput)
        assert out.pred.shape == (2, channels, 32, 32)
        assert out.x.shape == (2, widths[3] * 16)
        assert torch.isfinite(out.pred).all() and torch.isfinite(out.x).all()
        assert (out.pred >= 0).all() and (out.pred <= 1).all()
        if variant == "baseline":
            assert out.y is None
            assert model.motion is None
        else:
            assert out.y.shape == (2, widths[3] * 16) and torch.isfinite(out.y).all()
            raw = _model(variant, widths, channels, standardise=False)(app, flow)
            assert (raw.y >= 0).all()  # ReLU at the end of the motion encoder


def test_gradients_finite_every_variant():
    for variant in ("amsrc", "nogate", "baseline"):
        model = _model(variant)
        out = model(torch.rand(3, 4, 32, 32), torch.randn(3, 8, 32, 32))
        terms = amsrc_loss(out, torch.rand(3, 1, 32, 32), TrainConfig(), decay_weights(model))
        terms.total.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("variant,fuse", [("amsrc", lambda x, y: x + torch.sigmoid(x) * y), ("nogate", lambda x, y: x + y)])
def test_fusion_formula(variant, fuse):
    model = _model(variant).eval()
    app, flow = torch.rand(2, 4, 32, 32), torch.randn(2, 8, 32, 32)
    with torch.no_grad():
        s0, s1, s2, x = model.appearance(app)
        y = model.motion(flow)
        h = model.up3(model.up2(model.up1(fuse(x, y), s2), s1), s0)
        expected = torch.sigmoid(model.out(h))
        out = model(app, flow)
    torch.testing.assert_close(out.pred, expected, rtol=0, atol=0)
    # x, y come out standardised with the running statistics (eval mode)
    for got, raw, bn in ((out.x, x, model.std_x), (out.y, y, model.std_y)):
        want = (raw.flatten(1) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_standardised_bottlenecks():
    """A constant bottleneck cannot make the consistency vanish: in training, x and y are standardised
    per feature over the batch; the fusion and the prediction see the raw bottlenecks."""
    app, flow = torch.rand(16, 4, 32, 32), torch.randn(16, 8, 32, 32)
    std, raw = _model(standardise=True).train(), _model(standardise=False).train()
    out, ref = std(app, flow), raw(app, flow)
    torch.testing.assert_close(out.pred, ref.pred, rtol=0, atol=0)
    for got, r in ((out.x, ref.x), (out.y, ref.y)):
        live = r.var(0, unbiased=False) > 1e-2  # not ~constant (BN eps 1e-5 is then negligible)
        assert live.sum() > 0
        torch.testing.assert_close(got.mean(0), torch.zeros_like(got[0]), rtol=0, atol=1e-5)
        torch.testing.assert_close(got[:, live].var(0, unbiased=False), torch.ones(int(live.sum())), rtol=0, atol=1e-2)
    assert _model("baseline").std_x is None


def test_bad_model_settings():
    with pytest.raises(ConfigError, match="variant"):
        build_model(ModelConfig(variant="nope"), 1, 32)
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_model(ModelConfig(widths=TINY), 1, 30)
    with pytest.raises(ConfigError, match="4 positive"):
        build_model(ModelConfig(widths=(8, 16, 32)), 1, 32)
    with pytest.raises(ConfigError, match="model.skips must be 0, 1, 2 or 3"):
        build_model(ModelConfig(widths=TINY, skips=4), 1, 32)
    with pytest.raises(ConfigError, match="model.motion_flows must be 1 .. 4"):
        build_model(ModelConfig(widths=TINY, motion_flows=0), 1, 32)
    with pytest.raises(ConfigError, match="model.appearance_frames must be 1 .. 4"):
        build_model(ModelConfig(widths=TINY, appearance_frames=5), 1, 32)
    with pytest.raises(ConfigError, match="model.consistency must be one of cosine, squared"):
        build_model(ModelConfig(widths=TINY, consistency="l2"), 1, 32)
    with pytest.raises(ConfigError, match="needs model.standardise=true"):
        build_model(ModelConfig(widths=TINY, consistency="squared", standardise=False), 1, 32)


@pytest.mark.parametrize("skips", [0, 1, 2, 3])
def test_skips_decide_which_appearance_maps_reach_the_decoder(skips):
    """With ``skips`` = k the decoder sees the fused bottleneck and only the k coarsest appearance
    maps: zeroing any finer map leaves the prediction as it is, zeroing a kept one changes it."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=TINY, skips=skips), 1, 32).eval()
    a, f = torch.rand(3, 4, 32, 32), torch.randn(3, 8, 32, 32)
    with torch.no_grad():
        ref = model(a, f).pred
        for level in range(3):  # 0: the full-size map s0, 1: s1 (S/2), 2: s2 (S/4)
            def zero(_m, _inp, maps, level=level):
                return [torch.zeros_like(m) if i == level else m for i, m in enumerate(maps)]

            h = model.appearance.register_forward_hook(zero)
            try:
                got = model(a, f).pred
            finally:
                h.remove()
            kept = level >= 3 - skips  # skips keeps the coarsest: s2 first, then s1, then s0
            assert (not torch.equal(got, ref)) == kept, (skips, level)


@pytest.mark.parametrize("variant", ["amsrc", "nogate"])
def test_motion_flows_decide_which_flows_the_motion_stream_sees(variant):
    """``motion_flows=3``: the flow into frame t (channels 6, 7) changes nothing the network returns,
    an earlier flow does; with the default 4 the last flow counts too."""
    a, f = torch.rand(3, 4, 32, 32), torch.randn(3, 8, 32, 32)
    later, earlier = f.clone(), f.clone()
    later[:, 6:] += 2.0
    earlier[:, 4:6] += 2.0
    for flows in (3, 4):
        torch.manual_seed(0)
        model = build_model(ModelConfig(variant=variant, widths=TINY, motion_flows=flows), 1, 32).eval()
        with torch.no_grad():
            ref, last, early = model(a, f), model(a, later), model(a, earlier)
        for k in ("pred", "x", "y", "m"):
            assert torch.equal(getattr(ref, k), getattr(last, k)) == (flows == 3 or k == "x"), (flows, k)
            assert torch.equal(getattr(ref, k), getattr(early, k)) == (k == "x"), (flows, k)


@pytest.mark.parametrize("variant", ["amsrc", "baseline"])
def test_appearance_frames_decide_which_frames_the_appearance_stream_sees(variant):
    """``appearance_frames=1``: frames t-4 .. t-2 change nothing the network returns, frame t-1 does;
    with the default 4 every frame counts. Colour cubes: the last frame is its last C channels."""
    c = 3
    a, f = torch.rand(2, 4 * c, 32, 32), torch.randn(2, 8, 32, 32)
    early, last = a.clone(), a.clone()
    early[:, : 3 * c] = torch.rand(2, 3 * c, 32, 32)
    last[:, 3 * c:] = torch.rand(2, c, 32, 32)
    for frames in (1, 4):
        torch.manual_seed(0)
        model = build_model(ModelConfig(variant=variant, widths=TINY, appearance_frames=frames), c, 32).eval()
        assert next(model.appearance.parameters()).shape[1] == frames * c  # the first conv reads only those
        with torch.no_grad():
            ref, e, lt = model(a, f), model(early, f), model(last, f)
        assert torch.equal(ref.pred, e.pred) == (frames == 1) and torch.equal(ref.x, e.x) == (frames == 1)
        assert not torch.equal(ref.pred, lt.pred) and not torch.equal(ref.x, lt.x)


def test_channels_last_same_outputs():
    model = _model().eval()
    app, flow = torch.rand(4, 4, 32, 32), torch.randn(4, 8, 32, 32)
    with torch.no_grad():
        ref = model(app, flow)
        to_channels_last(model)
        assert uses_channels_last(model)
        cl = model(app.contiguous(memory_format=torch.channels_last), flow.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl.pred, ref.pred, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cl.x, ref.x, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- losses
def test_gradient_loss_hand_computed():
    p = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 0.0]]).view(1, 1, 2, 3)
    t = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 4.0]]).view(1, 1, 2, 3)
    # vertical: |p1 - p0| = [2, 1, 3], |t1 - t0| = [1, 1, 3] -> |diff| = [1, 0, 0], mean 1/3
    # horizontal: p [[1, 2], [0, 2]], t [[0, 0], [2, 2]] -> |diff| [[1, 2], [2, 0]], mean 5/4
    assert gradient_loss(p, t).item() == pytest.approx(1 / 3 + 5 / 4, abs=1e-7)
    assert gradient_loss(t, t).item() == 0.0
    # a constant shift leaves the gradients unchanged
    assert gradient_loss(t + 0.5, t).item() == pytest.approx(0.0, abs=1e-7)


def test_consistency_loss_hand_computed():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]])
    # cos = 0, 1, 24/25 -> 1 - cos = 1, 0, 0.04
    assert consistency_loss(x, y).item() == pytest.approx((1 + 0 + 0.04) / 3, abs=1e-6)
    # (B, C, H, W) maps are flattened per sample
    assert consistency_loss(x.view(3, 2, 1, 1), y.view(3, 2, 1, 1)).item() == pytest.approx(1.04 / 3, abs=1e-6)


def test_squared_consistency_hand_computed_and_sees_scale():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]])
    # mean over D of (x - y)^2: (1 + 1) / 2, (1 + 1) / 2, (1 + 1) / 2
    np.testing.assert_allclose(consistency_distance(x, y, "squared").numpy(), [1.0, 1.0, 1.0])
    assert consistency_loss(x, y, "squared").item() == pytest.approx(1.0)
    # a bottleneck twice as long: invisible to 1 - cos, seen by the squared distance
    assert consistency_distance(x, 2 * x, "cosine").abs().max().item() < 1e-6
    np.testing.assert_allclose(consistency_distance(x, 2 * x, "squared").numpy(), [0.5, 1.0, 12.5])
    with pytest.raises(ValueError, match="unknown consistency 'l1'"):
        consistency_distance(x, y, "l1")


def test_intensity_loss_hand_computed():
    p = torch.tensor([0.0, 0.5, 1.0, 1.0]).view(1, 1, 2, 2)
    t = torch.tensor([0.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)
    assert intensity_loss(p, t).item() == pytest.approx((0.25 + 1.0) / 4)


def test_weight_decay_is_real():
    model = _model()
    weights = decay_weights(model)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(weights) == len(convs) > 0
    expected = sum(float((m.weight.detach().double() ** 2).sum()) for m in convs)
    lw = weight_decay_loss(weights)
    assert lw.item() == pytest.approx(expected, rel=1e-5) and lw.item() > 1.0

    app, flow, target = torch.rand(4, 4, 32, 32), torch.randn(4, 8, 32, 32), torch.rand(4, 1, 32, 32)

    def grads(lam):
        model.zero_grad()
        model.eval()  # same forward both times (no BN statistics update)
        terms = amsrc_loss(model(app, flow), target, TrainConfig(weight_decay=lam), weights)
        terms.total.backward()
        return terms, {n: p.grad.clone() for n, p in model.named_parameters()}

    t0, g0 = grads(0.0)
    t1, g1 = grads(0.01)
    assert (t1.total - t0.total).item() == pytest.approx(0.01 * lw.item(), rel=1e-4)
    w = model.appearance.inc[0].weight
    torch.testing.assert_close(g1["appearance.inc.0.weight"] - g0["appearance.inc.0.weight"], 0.02 * w.detach(),
                               rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(g1["appearance.inc.1.weight"], g0["appearance.inc.1.weight"])  # BN: not decayed


def test_baseline_has_no_consistency_term():
    model = _model("baseline")
    out = model(torch.rand(2, 4, 32, 32), torch.randn(2, 8, 32, 32))
    terms = amsrc_loss(out, torch.rand(2, 1, 32, 32), TrainConfig(), decay_weights(model))
    assert terms.consistency.item() == 0.0


# ---------------------------------------------------------------- tensors and scores
@pytest.mark.parametrize("channels_last", [False, True])
def test_to_tensors_layout(channels_last):
    app, flow = _cubes(3, channels=3)
    a, t, f = to_tensors(app, flow, 4.0, channels_last=channels_last)
    assert a.shape == (3, 12, 32, 32) and t.shape == (3, 3, 32, 32) and f.shape == (3, 8, 32, 32)
    assert a.dtype == t.dtype == f.dtype == torch.float32
    for k in range(4):
        for c in range(3):
            np.testing.assert_array_equal(a[:, 3 * k + c].numpy(), app[:, k, :, :, c] / np.float32(255))
        for j in range(2):
            np.testing.assert_array_equal(f[:, 2 * k + j].numpy(), flow[:, k, :, :, j].astype(np.float32) / 4)
    for c in range(3):
        np.testing.assert_array_equal(t[:, c].numpy(), app[:, 4, :, :, c] / np.float32(255))
    if channels_last:
        assert a.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("consistency", ["cosine", "squared"])
def test_object_scores_match_manual(tmp_path, consistency):
    app, flow = _cubes(7)
    np.save(tmp_path / "a.npy", app)
    np.save(tmp_path / "f.npy", flow)
    app_m, flow_m = np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "f.npy", mmap_mode="r")
    model = _model(consistency=consistency)
    model.train()
    sc = object_scores(model, app_m, flow_m, 4.0, batch_size=3)
    assert model.training  # mode restored
    assert isinstance(sc, ObjectScores) and sc.s_f.dtype == sc.s_p.dtype == np.float32 and sc.s_f.shape == (7,)
    model.eval()
    with torch.no_grad():
        a, t, f = to_tensors(app, flow, 4.0)
        out = model(a, f)
        x, y = out.x.double(), out.y.double()
        if consistency == "cosine":
            s_f = 1 - (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))
        else:
            s_f = ((x - y) ** 2).mean(1)
        s_p = ((out.pred.double() - t.double()) ** 2).sum(dim=(1, 2, 3))
    np.testing.assert_allclose(sc.s_f, s_f.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sc.s_p, s_p.numpy(), rtol=1e-4)
    assert (sc.s_f >= 0).all() and (consistency == "squared" or (sc.s_f <= 1 + 1e-6).all())


def test_object_scores_empty_and_baseline():
    app, flow = _cubes(0)
    sc = object_scores(_model(), app, flow, 4.0)
    assert sc.s_f.shape == sc.s_p.shape == (0,) and sc.s_f.dtype == np.float32
    app, flow = _cubes(5)
    sc = object_scores(_model("baseline"), app, flow, 4.0)
    np.testing.assert_array_equal(sc.s_f, np.zeros(5, np.float32))
    assert (sc.s_p > 0).all()


def test_object_scores_rejects_bad_cubes(tmp_path):
    app, flow = _cubes(4)
    np.save(tmp_path / "a.npy", app[:, :4])
    with pytest.raises(DataError, match=r"a\.npy.*\(N, 5, S, S, C\)"):
        object_scores(_model(), np.load(tmp_path / "a.npy", mmap_mode="r"), flow, 4.0)
    with pytest.raises(DataError, match="flow cubes must be"):
        object_scores(_model(), app, flow[:3], 4.0)


def test_ped2_paper_preset_is_the_papers_formulation_on_the_ped2_inputs():
    """One store serves ped2 and ped2-paper (same prepare settings); the network, schedule and score
    are the paper's: its widths, raw bottlenecks, three skips, 60 epochs at 2e-4, S_f + 0.01 S_p, no S_m,
    the frame max over every object."""
    import dataclasses

    from amsrc.config import get_preset

    paper, ped2 = get_preset("ped2-paper"), get_preset("ped2")
    assert dataclasses.asdict(paper.prepare) == dataclasses.asdict(ped2.prepare)
    assert paper.model.widths == ModelConfig.WIDTH_PRESETS["paper"] and paper.model.skips == 3
    assert not paper.model.standardise
    assert (paper.train.epochs, paper.train.lr, paper.train.lr_decay, paper.train.lr_step) == (60, 2e-4, 0.8, 10)
    assert (paper.score.w_f, paper.score.w_p, paper.score.w_m, paper.train.bank_size) == (1.0, 0.01, 0.0, 0)
    assert paper.score.edge_min_side == 0 and ped2.score.edge_min_side == 16  # the paper's max over every object
    assert not paper.train.flip and ped2.train.flip
    net = build_model(paper.model, paper.prepare.channels, paper.prepare.cube_size)
    assert net.std_x is None and net.up3.skip and net.appearance.down3[1][0].out_channels == 512


def test_mirror_cubes_mirrors_frames_and_motion():
    """Training augmentation (train.flip): a mirrored cube shows the mirrored scene moving the mirrored
    way (flow x negated, y kept); unmirrored cubes and the memory layout are unchanged."""
    from amsrc.model.inputs import mirror_cubes, to_tensors

    rng = np.random.default_rng(0)
    app = rng.integers(0, 255, (3, 5, 8, 8, 1), dtype=np.uint8)
    flow = rng.normal(size=(3, 4, 8, 8, 2)).astype(np.float16)
    for cl in (False, True):
        a, t, f = to_tensors(app, flow, 4.0, channels_last=cl)
        ma, mt, mf = mirror_cubes(a, t, f, torch.tensor([True, False, True]))
        torch.testing.assert_close(ma[1], a[1])
        torch.testing.assert_close(mf[1], f[1])
        torch.testing.assert_close(ma[0], a[0].flip(-1))
        torch.testing.assert_close(mt[2], t[2].flip(-1))
        torch.testing.assert_close(mf[0, 0::2], -f[0, 0::2].flip(-1))  # dx of each flow: mirrored and negated
        torch.testing.assert_close(mf[0, 1::2], f[0, 1::2].flip(-1))  # dy: mirrored
        # the mirrored cube is the mirrored stored cube, converted the usual way
        a2, t2, f2 = to_tensors(app[:, :, :, ::-1].copy(), (flow[:, :, :, ::-1] * np.array([-1, 1], np.float16)).copy(),
                                4.0, channels_last=cl)
        torch.testing.assert_close(mf[2], f2[2])
        torch.testing.assert_close(ma[2], a2[2])
        assert ma.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    same = mirror_cubes(a, t, f, torch.zeros(3, dtype=torch.bool))
    assert same[0] is a
