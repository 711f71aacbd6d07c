"""Warp one digit with every 2-D family of T_θ and draw the sampling grids: the README's figure.

    python examples/transform_gallery.py --out docs/transforms.png [--data-dir DIR]

Each column is one family (translation, attention, similarity, affine, projective, tps) with a random θ near the
identity; the rows show the input with the sampling grid T_θ(G) on it, and the warped output.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import stn
from stn.data import load_mnist
from stn.viz import plot_transformations

FAMILIES = ("translation", "attention", "similarity", "affine", "projective", "tps")


def random_theta(name: str, generator: torch.Generator, strength: float = 0.25) -> torch.Tensor:
    """θ of ``name`` near the identity: the identity plus uniform noise of the given strength, (1, P)."""
    t = stn.transforms.get(name)
    noise = (torch.rand(1, t.num_params, generator=generator) * 2 - 1) * strength
    if name == "projective":
        noise[:, 6:] *= 0.5  # keep the horizon well outside the image
    return t.identity(1) + noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/transforms.png")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    mnist = load_mnist(args.data_dir, split="test")
    digit = F.pad(mnist.images[:1].float().div(255).unsqueeze(1), (7, 7, 7, 7))  # (1, 1, 42, 42)
    generator = torch.Generator().manual_seed(args.seed)
    thetas = [random_theta(name, generator) for name in FAMILIES]
    grids = torch.cat([stn.sampling_grid(theta, name, (42, 42)) for name, theta in zip(FAMILIES, thetas)])
    inputs = digit.expand(len(FAMILIES), -1, -1, -1)
    outputs = stn.sample(inputs, grids)
    title = "columns: " + ", ".join(FAMILIES) + f"  ({mnist.source})"
    print(plot_transformations(inputs, grids, outputs, args.out, title=title))


if __name__ == "__main__":
    main()
