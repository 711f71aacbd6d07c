"""The CUDA paths, against the CPU as the reference: the sampler and its gradients, the models, the engine with
AMP, a CUDA checkpoint read back on the CPU. They skip (with the reason) on a machine without a CUDA device;
benchmarks/gpu_table1.sh runs them on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from stn.engine import ClassificationTask, TrainConfig, Trainer
from stn.engine.checkpoint import load_model
from stn.functional import warp
from stn.models import create_model
from stn.modules.conv import Conv2d

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Identity plus an irregular perturbation, per family, so that no sample falls on a pixel (a kink of bilinear
# sampling, where finite differences disagree with the gradient).
THETAS = {
    "affine": lambda b: torch.tensor([0.971, 0.113, 0.0571, -0.093, 0.917, -0.0437]).repeat(b, 1),
    "projective": lambda b: torch.tensor([0.971, 0.113, 0.0571, -0.093, 0.917, -0.0437, 0.0523, -0.0217]).repeat(b, 1),
    "attention": lambda b: torch.tensor([0.713, 0.1037, -0.2119]).repeat(b, 1),
}


@pytest.mark.parametrize("transform", sorted(THETAS))
def test_warp_and_its_gradients_on_cuda_equal_the_cpu(transform):
    x = torch.rand(3, 2, 17, 19, dtype=torch.float64, requires_grad=True)
    theta = THETAS[transform](3).double().requires_grad_()
    outs = []
    for device in ("cpu", "cuda"):
        xd, td = x.detach().to(device).requires_grad_(), theta.detach().to(device).requires_grad_()
        y = warp(xd, td, transform, out_size=(11, 13))
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=device).view_as(y)).sum().backward()
        outs.append([t.cpu() for t in (y, xd.grad, td.grad)])
    for cpu, cuda in zip(*outs):
        torch.testing.assert_close(cuda, cpu, rtol=1e-9, atol=1e-9)


def test_gradcheck_of_the_sampler_on_cuda():
    x = torch.rand(2, 1, 6, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    theta = THETAS["affine"](2).double().cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: warp(x, t, "affine"), (x, theta))


@pytest.mark.parametrize("name", ["cnn", "st-cnn-aff", "st-cnn-proj", "st-cnn-tps", "st-fcn-aff"])
def test_table1_models_on_cuda_equal_the_cpu(name):
    model = create_model(name, in_shape=(1, 42, 42), seed=0)
    x = torch.rand(8, 1, 42, 42)
    expected = model(x)
    torch.testing.assert_close(model.cuda()(x.cuda()).cpu(), expected, rtol=1e-4, atol=1e-4)


def test_the_one_channel_convolution_keeps_nn_conv2d_on_cuda():
    conv = Conv2d(1, 4, 3).cuda()
    assert not conv._single_channel_route(torch.rand(2, 1, 8, 8, device="cuda", requires_grad=True))


def test_an_amp_run_on_cuda_trains_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(256, 1, 28, 28, generator=generator), torch.randint(0, 10, (256,)))
    model = create_model("st-cnn-aff", in_shape=(1, 28, 28), seed=0)
    config = TrainConfig(iterations=20, batch_size=64, device="cuda", amp=True, lr=0.01)
    trainer = Trainer(model, data, data, ClassificationTask(10), config, run_dir=tmp_path, progress=False)
    result = trainer.fit()
    assert result.finished and result.step == 20
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in trainer.history)
    loaded, _ = load_model(tmp_path, device="cpu")
    x = data.tensors[0][:16]
    with torch.no_grad():
        expected = model.float().eval()(x.cuda()).cpu()
        torch.testing.assert_close(loaded.eval()(x), expected, rtol=1e-4, atol=1e-4)
