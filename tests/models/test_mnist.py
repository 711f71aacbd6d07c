"""The Table 1 models: names, sizes, shapes, identity start, and that every one of them learns."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn.models import create_model, list_models
from stn.models.mnist import DEFAULT_TARGET_PARAMS, cnn_classifier, count_parameters, mnist_model

NAMES = ["fcn", "cnn", "st-fcn-aff", "st-fcn-proj", "st-fcn-tps", "st-cnn-aff", "st-cnn-proj", "st-cnn-tps"]
SHAPES = [(1, 28, 28), (1, 42, 42), (1, 60, 60), (2, 42, 42)]


def test_all_table1_models_are_registered() -> None:
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("shape", SHAPES)
def test_every_model_of_an_experiment_has_about_the_same_size(shape: tuple[int, int, int]) -> None:
    counts = {name: count_parameters(create_model(name, in_shape=shape)) for name in NAMES}
    for name, count in counts.items():
        assert abs(count - DEFAULT_TARGET_PARAMS) / DEFAULT_TARGET_PARAMS < 0.03, (name, count)


def test_target_params_and_width_are_honoured() -> None:
    small = create_model("st-cnn-tps", in_shape=(1, 42, 42), target_params=50_000)
    assert abs(count_parameters(small) - 50_000) < 2_500
    fixed = create_model("fcn", in_shape=(1, 28, 28), width=10)
    assert count_parameters(fixed) == 784 * 10 + 10 + 10 * 10 + 10 + 10 * 10 + 10


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_logits_shape(name: str, shape: tuple[int, int, int]) -> None:
    model = create_model(name, in_shape=shape, num_classes=19, target_params=150_000)
    assert model(torch.rand(3, *shape)).shape == (3, 19)


def test_transformer_output_is_halved_on_large_inputs_only_for_st_models() -> None:
    assert isinstance(create_model("st-cnn-aff", in_shape=(1, 42, 42)).pool, nn.AvgPool2d)
    assert isinstance(create_model("st-fcn-tps", in_shape=(1, 60, 60)).pool, nn.AvgPool2d)
    assert isinstance(create_model("st-cnn-aff", in_shape=(1, 28, 28)).pool, nn.Identity)
    assert isinstance(create_model("cnn", in_shape=(1, 42, 42)).pool, nn.Identity)
    assert isinstance(create_model("st-cnn-aff", in_shape=(1, 42, 42), downsample=1).pool, nn.Identity)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("st-")])
def test_transformers_start_at_the_identity(name: str) -> None:
    model = create_model(name, in_shape=(1, 42, 42), target_params=80_000)
    x = torch.rand(2, 1, 42, 42)
    torch.testing.assert_close(model.transformer(x), x, atol=1e-5, rtol=0)


def test_cnn_convolutions_are_valid_and_padded_only_for_small_inputs() -> None:
    assert cnn_classifier((1, 28, 28), 10, 8)[0].padding == (0, 0)
    padded = cnn_classifier((1, 21, 21), 10, 8)
    assert padded[0].padding == (4, 4)
    # the padded 21x21 stack ends in the same 2x2 maps as the valid 28x28 one
    assert padded[-1].in_features == cnn_classifier((1, 28, 28), 10, 8)[-1].in_features == 8 * 2 * 2
    assert cnn_classifier((1, 5, 40), 10, 8)(torch.rand(1, 1, 5, 40)).shape == (1, 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "rnn"}, "kind"),
        ({"kind": "cnn", "transform": "rot"}, "transform"),
        ({"kind": "cnn", "in_shape": (28, 28)}, "in_shape"),
        ({"kind": "cnn", "downsample": 0, "transform": "aff"}, "downsample"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mnist_model(**kwargs)


def test_a_budget_smaller_than_the_localisation_net_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        create_model("st-fcn-aff", in_shape=(1, 42, 42), target_params=20_000)


@pytest.mark.parametrize(
    ("name", "built_for", "given"),
    [
        ("st-cnn-aff", (1, 42, 42), (2, 1, 28, 28)),  # another variant's digits
        ("cnn", (1, 28, 28), (2, 3, 28, 28)),  # colour images
        ("add-2xst-fcn-aff", (2, 42, 42), (2, 1, 42, 42)),  # one channel of the addition pair
        ("volume-st", (1, 60, 60, 60), (2, 1, 60, 60)),  # an image instead of a volume
    ],
)
def test_an_input_of_another_shape_is_refused_naming_both(name: str, built_for: tuple, given: tuple) -> None:
    model = create_model(name, in_shape=built_for)
    expected = f"(B, {', '.join(map(str, built_for))})"
    with pytest.raises(ValueError, match=re.escape(expected) + ".*" + re.escape(str(given))):
        model(torch.rand(given))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="st-cnn-aff"):
        create_model("st-cnn-affine")


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_layer_and_sgd_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_shape=(1, 28, 28), target_params=60_000)
    y = torch.arange(20) % 10
    x = torch.zeros(20, 1, 28, 28)
    for i, k in enumerate(y.tolist()):  # class k: a bar at rows 2k+4, 2k+5
        x[i, 0, 2 * k + 4 : 2 * k + 6, 4:24] = 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        if len(losses) == 2:  # the second pass (the first reaches the localisation net only through zero weights)
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimizer.step()
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["fcn", "st-fcn-aff", "st-cnn-tps"])
def test_standardize_feeds_standardised_inputs_to_the_nets_but_raw_pixels_to_the_sampler(name: str) -> None:
    from stn.models.mnist import MNIST_MEAN, MNIST_STD, Standardize

    torch.manual_seed(0)
    plain = create_model(name, in_shape=(1, 42, 42))
    torch.manual_seed(0)
    std = create_model(name, in_shape=(1, 42, 42), standardize=True)
    assert count_parameters(std) == count_parameters(plain)  # a fixed layer: same widths, same parameters
    x = torch.rand(4, 1, 42, 42)
    seen = {}
    net = std.classifier[1]
    net.register_forward_hook(lambda _m, inputs, _o: seen.setdefault("classifier", inputs[0]))
    std(x)
    pooled = x if std.transformer is None else std.pool(std.transformer(x))
    torch.testing.assert_close(seen["classifier"], (pooled - MNIST_MEAN) / MNIST_STD)
    if std.transformer is not None:
        assert isinstance(std.transformer.localization[0], Standardize)
        # the transformer still samples the raw image: at the identity its output is the input
        torch.testing.assert_close(std.transformer(x), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="std > 0"):
        Standardize(0.1, 0.0)


def test_create_model_with_a_seed_depends_on_the_seed_alone_and_leaves_the_callers_rng() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = create_model("st-cnn-aff", seed=7, in_shape=(1, 28, 28), target_params=20_000)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is untouched
    torch.rand(5)  # another caller state
    b = create_model("st-cnn-aff", seed=7, in_shape=(1, 28, 28), target_params=20_000)
    c = create_model("st-cnn-aff", seed=8, in_shape=(1, 28, 28), target_params=20_000)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    torch.manual_seed(7)
    plain = create_model("st-cnn-aff", in_shape=(1, 28, 28), target_params=20_000)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), plain.parameters(), strict=True))
    assert "seed" not in a.stn_spec["kwargs"]  # not a factory argument: checkpoints rebuild without it


@pytest.mark.parametrize("transform", ["aff", "proj"])
def test_compositional_st_cnns_are_the_st_cnns_with_more_steps(transform: str) -> None:
    """Same parameters (names, shapes, count), so an ST-CNN's weights load into its compositional model; with one
    step the two compute the same logits, with four they differ once θ has moved."""
    st = create_model(f"st-cnn-{transform}", in_shape=(1, 42, 42), seed=0)
    with torch.no_grad():
        st.transformer.head.linear.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    one = create_model(f"ic-st-cnn-{transform}", in_shape=(1, 42, 42), steps=1)
    four = create_model(f"ic-st-cnn-{transform}", in_shape=(1, 42, 42))
    assert four.transformer.steps == 4
    assert count_parameters(four) == count_parameters(st)
    one.load_state_dict(st.state_dict())
    four.load_state_dict(st.state_dict())
    x = torch.rand(3, 1, 42, 42)
    assert torch.equal(one(x), st(x))
    assert not torch.allclose(four(x), st(x))


def test_compositional_models_refuse_a_family_they_do_not_build() -> None:
    from stn.models.mnist import ic_mnist_model

    with pytest.raises(ValueError, match="transform must be one of aff, proj, tps"):
        ic_mnist_model("attention")
