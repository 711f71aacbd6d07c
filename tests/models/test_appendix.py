"""The appendix models: MNIST addition, co-localisation transformer and encoder, 3-D transformer classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stn
from stn.models import create_model, list_models
from stn.models.appendix import (
    ActivationEncoder,
    DepthProjection,
    addition_model,
    colocalization_localization,
    volume_model,
)
from stn.models.mnist import Standardize, count_parameters

ADDITION = ["add-fcn", "add-cnn"] + [f"add-{k}-{t}" for k in ("st-fcn", "2xst-fcn") for t in ("aff", "proj", "tps")]


def test_every_addition_model_is_registered_with_about_400k_parameters() -> None:
    assert set(ADDITION) <= set(list_models("add-*"))
    counts = {name: count_parameters(create_model(name)) for name in ADDITION}
    assert all(abs(n - 400_000) < 10_000 for n in counts.values()), counts


@pytest.mark.parametrize("name", ADDITION)
def test_addition_models_map_two_channels_to_19_sums_and_train(name: str) -> None:
    model = create_model(name)
    x, y = torch.rand(4, 2, 42, 42), torch.randint(0, 19, (4,))
    logits = model(x)
    assert logits.shape == (4, 19)
    F.cross_entropy(logits, y).backward()
    loc = [p for n, p in model.named_parameters() if "localization" in n]
    assert all(p.grad is not None for p in model.parameters())
    assert ("st" in name) == bool(loc)


def test_st_fcn_warps_both_channels_with_one_transformer_seeing_both() -> None:
    model = create_model("add-st-fcn-aff")
    assert isinstance(model.transformer, stn.SpatialTransformer)
    assert model.transformer.localization.in_shape == (2, 42, 42)
    x = torch.rand(3, 2, 42, 42)
    torch.testing.assert_close(model.transformer(x), x, atol=1e-5, rtol=0)  # identity at initialisation


def test_2xst_fcn_has_two_transformers_each_seeing_and_warping_both_channels() -> None:
    model = create_model("add-2xst-fcn-tps")
    pst = model.transformer
    assert isinstance(pst, stn.ParallelSpatialTransformer)
    assert pst.num_transformers == 2 and not pst.shared and pst.transform.name == "tps"
    assert [net.in_shape for net in pst.localization] == [(2, 42, 42)] * 2
    x = torch.rand(3, 2, 42, 42)
    out = pst(x)  # the two 2-channel outputs concatenated into 4 channels, the identity at initialisation
    torch.testing.assert_close(out, torch.cat([x, x], dim=1), atol=1e-5, rtol=0)
    assert model.classifier[1].in_features == 4 * 21 * 21  # 2x average pool before the FCN
    with torch.no_grad():  # the two transformers are independent: moving one leaves the other's output alone
        pst.head[0].linear.bias[2] += 0.5
    moved = pst(x)
    assert not torch.allclose(moved[:, :2], x, atol=1e-3)
    torch.testing.assert_close(moved[:, 2:], x, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kind", "transform"), [("fcn", "aff"), ("st-fcn", None), ("2xst-fcn", None), ("rnn", None), ("st-fcn", "x")]
)
def test_addition_model_rejects_bad_kinds_and_transforms(kind: str, transform: str | None) -> None:
    with pytest.raises(ValueError, match=r"transform|kind"):
        addition_model(kind, transform)


def test_colocalization_transformer_is_a_centred_attention_crop_of_the_output_size() -> None:
    st = create_model("coloc-st")
    x = torch.rand(5, 1, 84, 84)
    crops, theta = st(x, return_theta=True)
    assert crops.shape == (5, 1, 28, 28)
    torch.testing.assert_close(theta, torch.tensor([[1 / 3, 0.0, 0.0]]).expand(5, 3))
    torch.testing.assert_close(crops, x[:, :, 28:56, 28:56])  # 28x28 pixels at the image's own resolution
    assert create_model("coloc-st", scale=0.5).localize(x[:1])[0, 0].item() == 0.5
    with pytest.raises(ValueError, match="scale"):
        create_model("coloc-st", scale=1.5)


def test_colocalization_transformer_fixes_the_scale_and_bounds_the_translation() -> None:
    st = create_model("coloc-st")  # the centre stays in the image
    with torch.no_grad():
        st.head.linear.bias.copy_(torch.tensor([5.0, 9.0, -9.0]))
    theta = st.localize(torch.rand(2, 1, 84, 84))
    assert (theta[:, 0] == 1 / 3).all() and (theta[:, 1:].abs() <= 1.0).all()


def test_colocalization_localization_net_has_the_papers_layers() -> None:
    net = colocalization_localization((1, 84, 84))
    conv = net[0]
    assert (conv.out_channels, conv.kernel_size, conv.stride) == (8, (9, 9), (4, 4))
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [128, 128]
    assert abs(count_parameters(net) - 100_000) < 2_000  # the paper's "100k parameter CNN"
    assert net(torch.rand(2, 1, 84, 84)).shape == (2, 128)
    assert colocalization_localization((1, 84, 84), hidden=8)[-2].out_features == 8
    with pytest.raises(ValueError, match="17x17"):
        colocalization_localization((1, 16, 40))


def test_activation_encoder_concatenates_raw_or_unit_normalised_layers() -> None:
    classifier = create_model("cnn").classifier
    enc = create_model("coloc-encoder", classifier=classifier)
    assert enc.taps == (2, 5, 7)  # after each max-pool, and the logits
    x = torch.rand(3, 1, 28, 28)
    sizes = []
    h = x
    for i, layer in enumerate(classifier):
        h = layer(h)
        if i in enc.taps:
            sizes.append(h.flatten(1).shape[1])
    features = enc(x)
    assert features.shape == (3, sum(sizes))
    torch.testing.assert_close(features[:, -10:], classifier(x))  # raw by default, as the paper
    normalised = create_model("coloc-encoder", classifier=classifier, normalize=True)(x)
    norms = torch.stack([block.norm(dim=1) for block in normalised.split(sizes, dim=1)])
    torch.testing.assert_close(norms, torch.ones_like(norms))
    raw = ActivationEncoder(classifier, taps=[-1], normalize=False)
    torch.testing.assert_close(raw(x), classifier(x))


def test_activation_encoder_rejects_bad_nets_and_taps() -> None:
    with pytest.raises(TypeError, match="Sequential"):
        ActivationEncoder(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="taps"):
        ActivationEncoder(nn.Sequential(nn.Identity()), taps=[3])


def test_depth_projection_of_an_upright_slab_is_the_digit() -> None:
    digit = torch.rand(2, 1, 60, 60)
    volume = torch.zeros(2, 1, 60, 60, 60)
    volume[:, :, 26:34] = digit.unsqueeze(2)
    torch.testing.assert_close(DepthProjection(60 / 8)(volume), digit)


@pytest.mark.parametrize("name", ["volume-st", "volume-cnn"])
def test_volume_models_classify_volumes_and_train(name: str) -> None:
    model = create_model(name, in_shape=(1, 20, 20, 20), out_size=(10, 10, 10), channels=4)
    logits = model(torch.rand(2, 1, 20, 20, 20))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_volume_st_at_identity_sees_what_the_baseline_sees() -> None:
    x = torch.rand(2, 1, 60, 60, 60)
    st, cnn = create_model("volume-st"), create_model("volume-cnn")
    assert st.transformer[0].transform.name == "affine3d" and st.transformer[0].out_size == (30, 30, 30)
    # half-resolution sampling at the identity is 2x2x2 average pooling, so both classifiers get the same image
    torch.testing.assert_close(st.transformer(x), cnn.pool(cnn.transformer(x)), atol=1e-5, rtol=1e-5)


def test_volume_model_rejects_an_out_size_that_does_not_divide_the_input() -> None:
    with pytest.raises(ValueError, match="out_size"):
        volume_model(in_shape=(1, 60, 60, 60), out_size=(30, 25, 25))


@pytest.mark.parametrize("name", ["add-fcn", "add-st-fcn-aff", "add-2xst-fcn-aff"])
def test_standardize_puts_mnist_statistics_before_every_localisation_net_and_the_classifier(name: str) -> None:
    torch.manual_seed(0)
    plain = create_model(name)
    torch.manual_seed(0)
    model = create_model(name, standardize=True)
    assert model.stn_spec["kwargs"]["standardize"] and not plain.stn_spec["kwargs"]["standardize"]
    assert isinstance(model.classifier[0], Standardize)
    loc = getattr(model.transformer, "localization", [])
    nets = list(loc) if isinstance(loc, (nn.ModuleList, list)) else [loc]
    assert len(nets) == ("st-" in name) + ("2x" in name) and all(isinstance(n[0], Standardize) for n in nets)
    assert count_parameters(model) == count_parameters(plain)
    x = torch.rand(2, 2, 42, 42)
    if nets:  # the sampler still reads raw pixels: at initialisation the transformers return the input
        torch.testing.assert_close(model.transformer(x)[:, :2], x, atol=1e-5, rtol=0)
    # same initial weights (Standardize has none), other inputs to them: other logits
    assert not torch.allclose(model(x), plain(x), atol=1e-3)
