"""Co-localisation: boxes, IoU, the triplet loss, the data sets, one optimisation and an end-to-end quick run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from stn.data import load_mnist
from stn.engine.checkpoint import save_checkpoint
from stn.experiments import colocalization
from stn.experiments.colocalization import (
    Budget,
    attention_boxes,
    box_iou,
    colocalization_set,
    colocalize,
    random_crops,
    triplet_loss,
)
from stn.models import create_model


def test_attention_boxes_are_the_cropped_regions_in_pixels() -> None:
    theta = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 0.0, 0.0], [0.25, 0.5, -0.5]])
    boxes = attention_boxes(theta, (84, 84))
    expected = torch.tensor([[0.0, 0.0, 84.0, 84.0], [28.0, 28.0, 56.0, 56.0], [52.5, 10.5, 73.5, 31.5]])
    torch.testing.assert_close(boxes, expected)
    torch.testing.assert_close(attention_boxes(theta[:1], (40, 60)), torch.tensor([[0.0, 0.0, 60.0, 40.0]]))


def test_box_iou() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([1.0, 50 / 150, 0.0]))


def test_triplet_loss_is_the_papers_hinge() -> None:
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    negative = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    # row 1: 1 - 2 + 1 = 0; row 2: 0.25 - 9 + 1 < 0 -> 0; with margin 2: 1 and 0
    assert triplet_loss(anchor, positive, negative, margin=1.0).item() == 0.0
    assert triplet_loss(anchor, positive, negative, margin=2.0).item() == pytest.approx(0.5)
    assert triplet_loss(anchor, negative, positive, margin=1.0).item() == pytest.approx((2 + 9.75) / 2)


def test_random_crops_keep_the_scale_and_stay_inside_the_image() -> None:
    theta = torch.tensor([[0.3, 0.9, -0.9], [1.5, 0.0, 0.0]]).repeat(200, 1)
    crops = random_crops(theta, torch.Generator().manual_seed(0))
    torch.testing.assert_close(crops[:, 0], theta[:, 0].clamp(max=1.0))
    boxes = attention_boxes(crops, (84, 84))
    assert boxes.min() >= 0 and boxes.max() <= 84
    assert crops[::2, 1].std() > 0.3  # positions spread over the image


@pytest.mark.parametrize("variant", ["coloc", "coloc-tc"])
def test_colocalization_sets_hold_one_class_inside_its_box(tiny_mnist: Path, variant: str) -> None:
    test = load_mnist(tiny_mnist, "test")
    images, boxes = colocalization_set(test, 3, variant, count=3, seed=1)
    assert images.shape == (3, 1, 84, 84)
    torch.testing.assert_close(boxes[:, 2:] - boxes[:, :2], torch.full((3, 2), 28.0))
    inside = torch.zeros(84, 84, dtype=torch.bool).repeat(3, 1, 1)
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        inside[i, y0:y1, x0:x1] = True
    ink = images[:, 0] > 0
    digit3 = test.images[test.labels == 3][0].float().div(255)
    in_box = images[:, 0][inside].sum()  # the whole digit is in its box (clutter, combined by max, may add ink)
    assert (in_box - 3 * digit3.sum()).abs() < 1 if variant == "coloc" else in_box > 3 * digit3.sum() - 1
    assert (ink & ~inside).any() == (variant == "coloc-tc")  # clutter only in TC
    again, _ = colocalization_set(test, 3, variant, count=3, seed=1)
    torch.testing.assert_close(again, images)
    with pytest.raises(ValueError, match="class 3"):
        colocalization_set(test, 3, variant, count=50)
    with pytest.raises(ValueError, match="variant"):
        colocalization_set(test, 3, "tc", count=3)


def test_colocalize_trains_the_transformer_and_scores_its_crops(tiny_mnist: Path) -> None:
    images, boxes = colocalization_set(load_mnist(tiny_mnist, "test"), 5, "coloc", count=3)
    encoder = create_model("coloc-encoder").eval()
    result = colocalize(images, boxes, encoder, Budget(encoder_iterations=1, steps=4, batch_size=3, lr=0.5))
    assert result.steps == [0, 1, 2, 3, 4] and result.history.shape == (5, 3, 3) and len(result.loss) == 4
    torch.testing.assert_close(result.history[0], torch.tensor([[1.0, 0.0, 0.0]]).expand(3, 3))
    assert not torch.equal(result.history[-1], result.history[0])  # the transformer moved
    torch.testing.assert_close(result.theta, result.history[-1])
    assert result.iou.shape == (3,) and ((result.iou >= 0) & (result.iou <= 1)).all()
    assert result.localised == (result.iou > 0.5).float().mean().item()
    with pytest.raises(ValueError, match="2 images"):
        colocalize(images[:1], boxes[:1], encoder, Budget(encoder_iterations=1, steps=1))


def _args(tiny_mnist: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    colocalization.add_arguments(parser)
    return parser.parse_args(
        [
            "--data-dir",
            str(tiny_mnist),
            "--out",
            str(out),
            "--runs-dir",
            str(out.parent / "runs"),
            "--digits",
            "1",
            "2",
            "--steps",
            "2",
            "--encoder-iterations",
            "2",
            "--num-images",
            "3",
            "--device",
            "cpu",
            *extra,
        ]
    )


def test_quick_run_end_to_end_writes_table_results_and_figure(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "coloc"
    assert colocalization.run(_args(tiny_mnist, out)) == 0
    record = json.loads((out / "results.json").read_text())
    assert set(record["localised_percent"]) == {"1", "2"}
    assert all(0 <= v <= 100 for per in record["localised_percent"].values() for v in per.values())
    table = (out / "colocalization.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "T 100%" in table and "TC 75-93%" in table
    assert (out / "boxes.png").stat().st_size > 1000
    encoder = tmp_path / "runs" / "encoder.pt"
    stamp = encoder.stat().st_mtime_ns
    assert colocalization.run(_args(tiny_mnist, out, "--datasets", "T")) == 0  # reuses the trained encoder
    assert encoder.stat().st_mtime_ns == stamp
    assert "TC ours" not in (out / "colocalization.md").read_text()


def test_an_encoder_checkpoint_for_other_image_sizes_is_refused(tiny_mnist: Path, tmp_path: Path) -> None:
    model = create_model("cnn", in_shape=(1, 42, 42))
    path = save_checkpoint(
        {
            "config": {"data": "rts"},
            "model_name": "cnn",
            "model_kwargs": {"in_shape": [1, 42, 42]},
            "model": model.state_dict(),
            "step": 1,
        },
        tmp_path / "rts.pt",
    )
    with pytest.raises(ValueError, match="28x28"):
        colocalization.run(_args(tiny_mnist, tmp_path / "out", "--encoder", str(path)))
