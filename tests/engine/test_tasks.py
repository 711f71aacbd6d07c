"""Each task's loss and metric sums against a hand computation, and its output-shape check."""

from __future__ import annotations

import math

import pytest
import torch

from stn.engine.tasks import (
    ClassificationTask,
    RegressionTask,
    SequenceTask,
    TripletTask,
    task_from_spec,
    triplet_loss,
)


def test_classification_loss_and_error_by_hand() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0], [0.0, math.log(4.0)]])
    labels = torch.tensor([0, 1, 0])
    loss, sums = ClassificationTask(2).evaluate(logits, labels)
    # -log p(label): log(4/3), log(2), log(5); predictions 0, 0 (tie -> first), 1: two wrong
    expected = [math.log(4 / 3), math.log(2.0), math.log(5.0)]
    assert loss.item() == pytest.approx(sum(expected) / 3)
    assert sums.tolist() == pytest.approx([sum(expected), 2.0])
    assert sums.dtype == torch.float64 and not sums.requires_grad


def test_sequence_loss_sums_positions_and_any_wrong_position_makes_the_sequence_wrong() -> None:
    logits = torch.zeros(2, 3, 4)  # uniform over 4 classes: every position costs log 4
    logits[0, :, 1] = 10.0  # sample 0 predicts (1, 1, 1)
    logits[1, :, 2] = 10.0  # sample 1 predicts (2, 2, 2)
    targets = torch.tensor([[1, 1, 1], [2, 0, 2]])
    loss, sums = SequenceTask(3, 4).evaluate(logits, targets)
    right = -torch.log_softmax(torch.tensor([0.0, 10, 0, 0]), 0)[1].item()  # the cost of a confident right answer
    wrong = -torch.log_softmax(torch.tensor([0.0, 0, 10, 0]), 0)[0].item()
    per_sample = [3 * right, 2 * right + wrong]
    assert loss.item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)
    assert sums.tolist() == pytest.approx([sum(per_sample), 1.0, 1 / 3], rel=1e-5)  # 1 wrong sequence, 1 of 6 positions


def test_regression_is_the_mean_squared_error_per_sample() -> None:
    loss, sums = RegressionTask().evaluate(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0, 3]]))
    assert loss.item() == pytest.approx((2.5 + 4.5) / 2) and sums.tolist() == pytest.approx([7.0])


@pytest.mark.parametrize(
    ("task", "output", "target", "match"),
    [
        (ClassificationTask(10), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long), r"\(B, 10\)"),
        (ClassificationTask(10), torch.zeros(4, 5, 10), torch.zeros(4, dtype=torch.long), r"\(B, 10\)"),
        (SequenceTask(5, 11), torch.zeros(4, 55), torch.zeros(4, 5, dtype=torch.long), r"\(B, 5, 11\)"),
        (SequenceTask(5, 11), torch.zeros(4, 5, 10), torch.zeros(4, 5, dtype=torch.long), r"\(B, 5, 11\)"),
        (RegressionTask(), torch.zeros(4, 6), torch.zeros(4, 3), r"\(4, 3\)"),
        (TripletTask(), torch.zeros(4, 8), torch.zeros(4, 4), r"\(B, 4 \+ 3F\)"),  # 4 features: not three embeddings
        (TripletTask(), torch.zeros(4, 10), torch.zeros(4, 2), r"boxes \(B, 4\)"),
    ],
)
def test_outputs_of_the_wrong_shape_are_named(task, output, target, match) -> None:
    with pytest.raises(ValueError, match=match):
        task.check_output(output, target)


def test_specs_rebuild_the_task() -> None:
    for task in (ClassificationTask(19), SequenceTask(5, 11), RegressionTask(), TripletTask(2.0, 0.7)):
        assert task_from_spec(task.spec()).spec() == task.spec()
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        task_from_spec({"name": "ranking"})
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationTask(1)


def test_triplet_loss_is_the_papers_hinge_on_squared_distances_by_hand() -> None:
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    partner = torch.tensor([[1.0, 0.0], [1.0, 3.0], [0.0, 0.0]])
    random = torch.tensor([[0.0, 2.0], [1.0, 2.0], [0.5, 0.0]])
    # ||a - p||² - ||a - r||² + 1: 1 - 4 + 1 (met by the margin: 0), 4 - 1 + 1, 0 - 0.25 + 1
    torch.testing.assert_close(triplet_loss(anchor, partner, random), torch.tensor([0.0, 4.0, 0.75]))
    torch.testing.assert_close(triplet_loss(anchor, partner, random, margin=3.0), torch.tensor([0.0, 6.0, 2.75]))


def test_triplet_task_scores_the_hinge_and_the_crops_iou_by_hand() -> None:
    # rows: the crop's box, then e() of the anchor's crop, the partner's crop and the random crop (F = 2)
    embeddings = torch.tensor([[0.0, 0, 1, 0, 0, 2], [1.0, 1, 1, 3, 1, 2], [0.0, 0, 0, 0, 0.5, 0]])
    boxes = torch.tensor([[0.0, 0, 28, 28], [10.0, 0, 38, 28], [0.0, 0, 28, 28]])
    truth = torch.tensor([[0.0, 0, 28, 28], [0.0, 0, 28, 28], [0.0, 14, 28, 42]])
    output = torch.cat([boxes, embeddings], dim=1).requires_grad_()
    loss, sums = TripletTask().evaluate(output, truth)
    assert loss.item() == pytest.approx((0 + 4 + 0.75) / 3)
    iou = [1.0, 18 / 38, 14 / 42]  # identical; 18 of 28 columns overlap; 14 of 28 rows overlap
    assert sums.tolist() == pytest.approx([4.75, 1.0, sum(iou)])  # one crop above IoU 0.5
    assert sums.dtype == torch.float64 and not sums.requires_grad
    loss.backward()
    assert output.grad[:, :4].abs().sum() == 0  # the boxes are for the metrics only
    assert TripletTask(threshold=0.3).evaluate(output, truth)[1][1].item() == 3.0
    with pytest.raises(ValueError, match="margin"):
        TripletTask(margin=-1.0)
