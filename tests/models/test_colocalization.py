"""stn.models.colocalization: crop boxes, candidates, the triplet loss, best response and the transformer's fit."""

from __future__ import annotations

import pytest
import torch

from stn.coords import box_iou
from stn.models import create_model
from stn.models.colocalization import (
    best_response,
    candidate_crops,
    colocalize,
    crop_boxes,
    expected_triplet_loss,
    fit_transformer,
    fraction_localised,
)


def test_crop_boxes_are_the_cropped_regions_in_pixels() -> None:
    theta = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 0.0, 0.0], [0.25, 0.5, -0.5]])
    boxes = crop_boxes(theta, (84, 84))
    expected = torch.tensor([[0.0, 0.0, 84.0, 84.0], [28.0, 28.0, 56.0, 56.0], [52.5, 10.5, 73.5, 31.5]])
    torch.testing.assert_close(boxes, expected)
    torch.testing.assert_close(crop_boxes(theta[:1], (40, 60)), torch.tensor([[0.0, 0.0, 60.0, 40.0]]))


def test_candidate_crops_tile_the_image_at_the_stride() -> None:
    theta = candidate_crops(84, 28, 4)
    assert theta.shape == (15 * 15, 3) and (theta[:, 0] == 1 / 3).all()
    boxes = crop_boxes(theta, (84, 84))
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 28.0, 28.0]))
    torch.testing.assert_close(boxes[1], torch.tensor([4.0, 0.0, 32.0, 28.0]))  # row by row
    torch.testing.assert_close(boxes[15], torch.tensor([0.0, 4.0, 28.0, 32.0]))
    torch.testing.assert_close(boxes[-1], torch.tensor([56.0, 56.0, 84.0, 84.0]))
    torch.testing.assert_close(theta[len(theta) // 2], torch.tensor([1 / 3, 0.0, 0.0]))  # the centred crop
    assert candidate_crops(84, 28, 5).shape == (12 * 12, 3)  # the last window stops short of the border
    for size, crop, stride in [(20, 28, 4), (84, 28, 0)]:
        with pytest.raises(ValueError, match="crop"):
            candidate_crops(size, crop, stride)


def test_expected_triplet_loss_averages_the_papers_hinge_over_partners_and_random_crops() -> None:
    g = torch.Generator().manual_seed(0)
    candidates, partners, randoms = (torch.randn(k, 5, generator=g) for k in (4, 3, 6))
    loss = expected_triplet_loss(torch.cdist(candidates, partners) ** 2, torch.cdist(candidates, randoms) ** 2, 2.0)
    for c in range(4):
        terms = [
            max(0.0, ((candidates[c] - p) ** 2).sum().item() - ((candidates[c] - r) ** 2).sum().item() + 2.0)
            for p in partners
            for r in randoms
        ]
        assert loss[c].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def _planted(objects: torch.Tensor, g: int = 24) -> torch.Tensor:
    """Embeddings ``(n, g, 7)`` of ``g`` crops along a line through each image: a crop ``d`` steps from the
    image's object sees it as bump ``k = d`` of seven (partly when ``|d| <= 3``), a crop further off sees nothing."""
    d = torch.arange(g).unsqueeze(0) - objects.unsqueeze(1)  # (n, g)
    return torch.exp(-((d.unsqueeze(2) - torch.arange(-3, 4)) ** 2).float())


def test_best_response_finds_the_crops_the_images_have_in_common() -> None:
    objects = torch.tensor([9, 12, 14, 7, 11, 13])  # every start crop (12) overlaps its object, as a centred crop
    embeddings = _planted(objects)
    history, losses = best_response(embeddings, torch.full((6,), 12), margin=1.0, rounds=10)
    torch.testing.assert_close(history[0], torch.full((6,), 12))
    torch.testing.assert_close(history[-1], objects)
    assert len(history) == len(losses) + 1 < 11  # stopped once a sweep changed nothing
    assert losses[-1] < losses[0]
    again, _ = best_response(embeddings, torch.full((6,), 12), rounds=1)
    assert len(again) == 2  # one sweep at most
    with pytest.raises(ValueError, match="2 images"):
        best_response(embeddings[:1], torch.zeros(1, dtype=torch.long))


def test_best_response_keeps_crops_that_all_see_nothing() -> None:
    # the known limit: when no image's crop catches its object, empty crops are every image's best response
    objects = torch.tensor([3, 20, 5, 18])
    history, _ = best_response(_planted(objects), torch.full((4,), 12), margin=1.0, rounds=5)
    assert ((history[-1] - objects).abs() > 3).all()  # (empty crops tie: which one is taken does not matter)


def _squares(positions: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """84x84 images, each with one textured 28x28 square at ``(x0, y0)``, and the squares' boxes."""
    pattern = torch.full((28, 28), 0.6)  # ink up to the square's edges: only the exact crop holds all of it
    pattern[8:20, 8:20] = 0.0
    pattern[2:6, 12:26] = 1.0
    images = torch.zeros(len(positions), 1, 84, 84)
    for i, (x0, y0) in enumerate(positions):
        images[i, 0, y0 : y0 + 28, x0 : x0 + 28] = pattern
    boxes = torch.tensor([[x0, y0, x0 + 28, y0 + 28] for x0, y0 in positions], dtype=torch.float32)
    return images, boxes


def test_fit_transformer_learns_to_take_the_given_crops() -> None:
    images, boxes = _squares([(0, 0), (56, 8), (20, 40), (48, 52), (28, 28), (8, 56)])
    target = torch.cat([torch.full((6, 1), 1 / 3), ((boxes[:, :2] + boxes[:, 2:]) / 2) / 42 - 1], dim=1)
    st = fit_transformer(images, target, steps=300, lr=3e-3)
    theta = st.localize(images).detach()
    assert (theta[:, 0] == 1 / 3).all()
    assert (theta[:, 1:] - target[:, 1:]).abs().max() < 0.05  # within 2 px


def test_colocalize_finds_a_planted_common_object_and_trains_the_transformer_on_it() -> None:
    # positions on the 4-px grid of the candidates: the object's crop is identical in every image
    images, boxes = _squares([(0, 0), (56, 8), (20, 40), (48, 52), (28, 28), (8, 56), (40, 4), (4, 32)])
    torch.manual_seed(0)
    encoder = create_model("coloc-encoder").eval()  # an untrained CNN: identical crops still embed identically
    search = {"stride": 4, "rounds": 10, "fit_steps": 300, "fit_lr": 3e-3}
    result = colocalize(images, boxes, encoder, **search)
    found = box_iou(crop_boxes(result.history[-1], (84, 84)), boxes)
    assert (found > 0.74).all()  # on the squares, to a stride (4 px: IoU 0.75) at most
    torch.testing.assert_close(result.history[0], torch.tensor([[1 / 3, 0.0, 0.0]]).expand(8, 3))  # from the centre
    assert result.iou.shape == (8,) and result.localised == 1.0 and (result.iou > 0.7).all()
    assert result.localised == fraction_localised(result.iou)
    torch.testing.assert_close(result.theta, result.transformer.localize(images).detach())
    with pytest.raises(ValueError, match="square"):
        colocalize(images[:, :, :80], boxes, encoder, **search)
    uneven = colocalize(images, boxes, encoder, stride=5, rounds=1, fit_steps=1)
    torch.testing.assert_close(uneven.history[0, :, 1:], torch.full((8, 2), 2 / 42))  # 44 px: nearest the centre
