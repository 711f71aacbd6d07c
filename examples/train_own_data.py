"""Train an ST-CNN from the registry on your own folder of images with the training engine: train, resume,
evaluate, visualise.

The folder holds one sub-folder per class of grayscale PNGs (``<folder>/<class>/*.png``, like torchvision's
``ImageFolder``). Without ``--folder`` the script first writes a small synthetic one (crosses and squares at
random places and sizes in 32x32 images) so that it runs anywhere in a minute on a CPU; there the test error
ends near 2% (1.7% of 120 test images under every CPU kernel set we tried) and θ has moved visibly away from the
identity (the grids of what-the-transformer-does.png).

    python examples/train_own_data.py --out runs/own-data             # train (Ctrl-C saves a checkpoint)
    python examples/train_own_data.py --out runs/own-data             # again: resumes, or says it is done
    python examples/train_own_data.py --out runs/own-data --epochs 24  # continues; its schedule now spans 24 epochs
    python examples/train_own_data.py --folder my_images --size 64 --out runs/mine

The run folder gets what every engine run gets: checkpoint.pt, config.json, metrics.jsonl, summary.json and the
figures; ``stn visualize`` and ``stn export`` work on it too (``stn eval`` needs data stn can rebuild, so here
the script scores the model itself).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from stn import viz
from stn.engine import ClassificationTask, TrainConfig, Trainer, evaluate, load_model, run_status
from stn.models import create_model


class ImageFolder(Dataset):
    """``(image (1, size, size) in [0, 1], class index)`` for every PNG of ``root/<class>/``; every ``k``-th
    image (``part="test"``) or the others (``part="train"``)."""

    def __init__(self, root: Path, size: int, part: str, k: int = 5) -> None:
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files = [(f, c) for c, name in enumerate(self.classes) for f in sorted((root / name).glob("*.png"))]
        self.files = [item for i, item in enumerate(files) if (i % k == 0) == (part == "test")]
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[index]
        image = Image.open(path).convert("L").resize((self.size, self.size))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).unsqueeze(0), label


def write_demo_folder(root: Path, per_class: int = 300, size: int = 32, seed: int = 0) -> Path:
    """Crosses and squares of random size at random places, one sub-folder per class."""
    rng = np.random.default_rng(seed)
    for name in ("cross", "square"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.zeros((size, size), dtype=np.uint8)
            half = int(rng.integers(3, 7))
            y, x = rng.integers(half, size - half, 2)
            if name == "square":
                image[y - half : y + half, x - half : x + half] = 255
            else:
                image[y - half : y + half, x - 1 : x + 1] = 255
                image[y - 1 : y + 1, x - half : x + half] = 255
            Image.fromarray(image).save(root / name / f"{i:04d}.png")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="<folder>/<class>/*.png (default: a synthetic folder)")
    parser.add_argument("--size", type=int, default=32, help="images are resized to size x size (default 32)")
    parser.add_argument("--epochs", type=int, default=16, help="default 16 (about 15 s on 2 CPU cores)")
    parser.add_argument("--out", type=Path, default=Path("runs/own-data"))
    args = parser.parse_args(argv)

    folder = args.folder or write_demo_folder(args.out.parent / f"{args.out.name}-images")
    train_set = ImageFolder(folder, args.size, "train")
    test_set = ImageFolder(folder, args.size, "test")
    classes = len(train_set.classes)

    # The recipe: stn's (results/recipe-ablation), a cosine decay of the learning rate after a short warm-up,
    # which suits a run of any length. The paper's step schedule (TrainConfig's default) divides the rate by 100
    # within the few epochs of a short run, before the transformer has moved from the identity. Gradients are
    # clipped to norm 1: without it, on some CPUs' kernels (ATEN_CPU_CAPABILITY=default) the transformer zoomed out
    # of the image mid-run and the run ended at chance (50%), where clipped it ends at 1.7% on every kernel set.
    # The model comes from the registry, so the checkpoint can rebuild it by name.
    config = TrainConfig(
        epochs=args.epochs, batch_size=32, lr=0.05, schedule="cosine", warmup=0.05, clip_grad_norm=1.0,
        device="auto", theta_samples=8,
    )  # fmt: skip
    torch.manual_seed(config.seed)
    model = create_model("st-cnn-aff", in_shape=(1, args.size, args.size), num_classes=classes)
    print(f"{len(train_set)} training / {len(test_set)} test images of {train_set.classes}; run in {args.out}: "
          f"{run_status(args.out, config)}")  # fmt: skip

    # resume=True continues an interrupted (or shorter) run in the folder, and refuses one of another recipe.
    trainer = Trainer(model, train_set, test_set, ClassificationTask(classes), config, run_dir=args.out, resume=True)
    result = trainer.fit()
    if not result.finished:
        print(f"interrupted at step {result.step}; run the same command to continue")
        return 130

    # Evaluate the saved checkpoint: the model is rebuilt from its recorded name and arguments.
    model, checkpoint = load_model(args.out)
    scores = evaluate(model, test_set, ClassificationTask(classes))
    print(f"after {checkpoint['step']} steps: test error {100 * scores['error']:.1f}%, loss {scores['loss']:.3f}")

    # What the spatial transformer does to a few test images: input, sampling grid, output.
    images = torch.stack([test_set[i][0] for i in range(0, len(test_set), max(1, len(test_set) // 8))][:8])
    figure = viz.plot_model_transformations(model, images, args.out / "what-the-transformer-does.png")
    print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
