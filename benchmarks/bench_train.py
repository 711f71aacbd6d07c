"""Training throughput of one ST-CNN step: the library against the same network written in plain PyTorch.

The plain version is written the way the official PyTorch spatial-transformer tutorial writes it
(``F.affine_grid`` + ``F.grid_sample`` inside the model's ``forward``) with exactly our architecture, and gets
our weights, so both compute the same function (checked). Steps of the variants are interleaved, so that a
busy machine slows all of them alike. The training engine's own step (``Trainer.train_step``: the task's loss
and metric sums, SGD over the param groups) is timed on the same network too. Targets: ours and the engine's step
>= 0.95x plain; and the paper's claim that a spatial transformer costs little, shown as the ST-CNN's time against
its classifier alone (the same network without the transformer) and against the Table 1 CNN (which sees the
full-resolution input).

Profile-guided speed-up (issue #12): ``torch.profiler`` put ~40% of an ST-CNN step in oneDNN's input gradient of
the classifier's first, one-channel convolution (the path from the loss to θ); ``stn.modules.conv.Conv2d`` takes
it from ATen's im2col kernel instead. The plain network keeps ``nn.Conv2d`` (the "before"), and the TPS ST-CNN is
timed with both, so the ratios below are the speed-up. The CNN never needs that gradient (its first layer reads the
data) and is unchanged.

Usage::

    python benchmarks/bench_train.py                    # RTS (42x42), batch 256, CPU
    python benchmarks/bench_train.py --steps 50 --device cuda
    python benchmarks/bench_train.py --channels-last     # NHWC weights, as `stn train` runs 2-D models
    python benchmarks/bench_train.py --threads 1         # one core per run, as the long runs in results/
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from stn.models import create_model


class PlainSTCNN(nn.Module):
    """The ST-CNN (affine) of ``create_model("st-cnn-aff", in_shape=(1, 42, 42))`` in tutorial style."""

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        loc = ours.transformer.localization
        self.localization = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(1, 20, 5, padding=2),
            nn.ReLU(True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(20, 20, 5, padding=2),
            nn.ReLU(True),
            nn.AdaptiveMaxPool2d(4),
        )
        self.fc_loc = nn.Sequential(nn.Linear(320, 20), nn.ReLU(True), nn.Linear(20, 6))
        c = ours.classifier
        self.classifier = nn.Sequential(
            nn.Conv2d(1, c[0].out_channels, 9, padding=c[0].padding),
            nn.ReLU(True),
            nn.MaxPool2d(2),
            nn.Conv2d(c[0].out_channels, c[3].out_channels, 7),
            nn.ReLU(True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c[7].in_features, 10),
        )
        with torch.no_grad():  # our weights, so that both networks compute the same function
            for mine, theirs in (
                (self.localization[1], loc.features[1]),
                (self.localization[4], loc.features[4]),
                (self.fc_loc[0], loc.fc[1]),
                (self.fc_loc[2], ours.transformer.head.linear),
                (self.classifier[0], c[0]),
                (self.classifier[3], c[3]),
                (self.classifier[7], c[7]),
            ):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.size()), align_corners=False)
        x = F.grid_sample(x, grid, align_corners=False)
        return self.classifier(F.avg_pool2d(x, 2))


def with_nn_conv2d(model: nn.Module) -> nn.Module:
    """A copy of a Table 1 model whose classifier starts with a plain ``nn.Conv2d`` (same weights): the "before"."""
    before = copy.deepcopy(model)
    first = before.classifier[0]
    plain = nn.Conv2d(first.in_channels, first.out_channels, first.kernel_size, padding=first.padding)
    plain.load_state_dict(first.state_dict())
    before.classifier[0] = plain
    return before


def sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _engine_stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool, run_dir: str):
    """The training engine's step (:meth:`stn.engine.trainer.Trainer.train_step`: task loss and metric sums,
    SGD over the param groups) on ``model``."""
    from torch.utils.data import TensorDataset

    from stn.engine import ClassificationTask, TrainConfig, Trainer

    data = TensorDataset(x.cpu(), y.cpu())
    config = TrainConfig(batch_size=len(x), device=str(x.device), channels_last=channels_last, theta_samples=0)
    trainer = Trainer(model, data, data, ClassificationTask(10), config, callbacks=[], run_dir=run_dir, progress=False)
    trainer.close()  # only its step is timed: no run folder is written

    def step() -> None:
        trainer.train_step(x, y)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights for every variant, as stn train")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = create_model("st-cnn-aff", in_shape=(1, 42, 42))
    with torch.no_grad():  # a transformer that is not the identity
        ours.transformer.head.linear.weight.normal_(0, 0.05)
    plain = PlainSTCNN(ours)
    x = torch.rand(args.batch_size, 1, 42, 42, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    ours, plain = ours.to(device), plain.to(device)
    with torch.no_grad():
        diff = (ours(x) - plain(x)).abs().max().item()
    print(f"ours vs plain output difference: {diff:.2e} (same weights, same function)")
    tps = create_model("st-cnn-tps", in_shape=(1, 42, 42), seed=0)
    models = {
        "ST-CNN (stn library)": ours,
        "ST-CNN (plain PyTorch)": plain,
        "ST-CNN TPS (stn library)": tps.to(device),
        "ST-CNN TPS (nn.Conv2d)": with_nn_conv2d(tps).to(device),
        "its classifier alone": nn.Sequential(nn.AvgPool2d(2), ours.classifier).to(device),
        "Table 1 CNN (42x42 input)": create_model("cnn", in_shape=(1, 42, 42)).to(device),
    }
    if args.channels_last:  # every variant alike, as `stn train` keeps its models
        for model in models.values():
            model.to(memory_format=torch.channels_last)
    variants = {name: sgd_step(model, x, y) for name, model in models.items()}
    with tempfile.TemporaryDirectory() as run_dir:
        engine = copy.deepcopy(ours)  # same weights, its own optimiser
        variants["ST-CNN (stn engine step)"] = _engine_stepper(engine, x, y, args.channels_last, run_dir)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.steps + 3):  # 3 warm-up rounds
        for name, step in variants.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    layout = "channels-last" if args.channels_last else "NCHW"
    print(
        f"\nbatch {args.batch_size} on {device} ({torch.get_num_threads()} threads, {layout}), median of "
        f"{args.steps} interleaved steps:"
    )
    for name, t in median.items():
        print(f"  {name:<28} {1000 * t:8.1f} ms/step  {args.batch_size / t:8.0f} images/s")
    ours_t, plain_t = median["ST-CNN (stn library)"], median["ST-CNN (plain PyTorch)"]
    print(f"\nours / plain throughput: {plain_t / ours_t:.3f}x (target >= 0.95x; > 1: stn.modules.conv)")
    tps_t, tps_before = median["ST-CNN TPS (stn library)"], median["ST-CNN TPS (nn.Conv2d)"]
    print(f"ST-CNN TPS speed-up from stn.modules.conv: {tps_before / tps_t:.3f}x")
    engine_t = median["ST-CNN (stn engine step)"]
    print(f"engine step / plain throughput: {plain_t / engine_t:.3f}x (target >= 0.95x)")
    print(
        f"ST-CNN time / its classifier alone: {ours_t / median['its classifier alone']:.2f} "
        "(the cost of the spatial transformer)"
    )
    print(f"ST-CNN time / Table 1 CNN time: {ours_t / median['Table 1 CNN (42x42 input)']:.2f}")


if __name__ == "__main__":
    main()
