"""The fused bound allocates nothing of the logits' size except the gradient it returns."""
import pytest
import torch
from helpers import make_inputs, peak_bytes

import fastair


# Native only: the Triton interpreter copies tensors through numpy, so its CPU allocations say
# nothing about the kernels; their GPU memory is what the CUDA benchmark records.
@pytest.mark.parametrize("backend", ["native"])
def test_peak_memory_of_forward_and_backward(backend):
    x, logits, z, mu, logvar = make_inputs(64, 50, 784)
    logits.requires_grad_(True)
    logits_bytes = logits.numel() * logits.element_size()
    small = 64 * 50 * 50 * 4 * 8  # a few [k, B, Z] tensors' worth
    with fastair.use_backend(backend):
        fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar)  # build/warm up
        with torch.no_grad():
            forward = peak_bytes(lambda: fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar))
        both = peak_bytes(lambda: torch.autograd.grad(
            fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar).sum(), logits))
    assert forward < small, f"forward peak {forward} bytes"
    assert logits_bytes <= both < logits_bytes + small, f"fwd+bwd peak {both} bytes"


@pytest.mark.parametrize("backend", ["native"])
def test_fused_decoder_head_memory_does_not_grow_with_the_rows(backend):
    """Beyond the gradients it returns, the op's memory is fixed buffers: the same at 16 and at
    64 samples, and far below the logits it never stores."""
    g = torch.Generator().manual_seed(0)
    b, hdim, d = 50, 200, 784
    weight = (torch.randn(d, hdim, generator=g) / hdim ** 0.5).requires_grad_(True)
    bias = torch.zeros(d, requires_grad=True)
    x = (torch.rand(b, d, generator=g) < 0.5).float()
    extra = {}
    with fastair.use_backend(backend):
        for k in (16, 64):
            h = torch.randn(k, b, hdim, generator=g).requires_grad_(True)
            fastair.linear_bernoulli_log_prob(h, weight, bias, x)  # build/warm up
            peak = peak_bytes(lambda h=h: torch.autograd.grad(
                fastair.linear_bernoulli_log_prob(h, weight, bias, x).sum(), (h, weight, bias)))
            extra[k] = peak - (h.numel() + weight.numel() + bias.numel()) * 4
    logits_bytes = 64 * b * d * 4
    assert extra[64] <= extra[16] * 1.05 + 64 * b * 8, extra
    assert extra[64] < logits_bytes / 3, (extra, logits_bytes)
