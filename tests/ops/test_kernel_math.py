"""The Triton kernels' elementwise helpers against float64 (through the interpreter on CPU)."""
import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from fastair.kernels.common import log1p_small  # noqa: E402

pytestmark = pytest.mark.interpreter


@triton.jit
def _log1p_kernel(e_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, log1p_small(tl.load(e_ptr + offs, mask=mask, other=0.0)),
             mask=mask)


def _inputs(dtype):
    """e in [0, 1]: uniform, log-spaced down to the smallest normal, subnormals, 0 and 1."""
    g = torch.Generator().manual_seed(0)
    tiny = torch.finfo(dtype).tiny
    parts = [torch.rand(20000, generator=g, dtype=torch.float64),
             torch.logspace(torch.log10(torch.tensor(tiny, dtype=torch.float64)).item(), 0, 20000,
                            dtype=torch.float64),
             torch.tensor([0.0, 1.0, tiny / 4, tiny, 1e-30, 1 - 1e-7], dtype=torch.float64)]
    return torch.cat(parts).to(dtype)


@pytest.mark.parametrize("dtype,max_rel", [(torch.float32, 4e-7), (torch.float64, 4e-16)])
def test_log1p_small_is_accurate_on_all_of_its_range(dtype, max_rel):
    e = _inputs(dtype)
    out = torch.empty_like(e)
    _log1p_kernel[(triton.cdiv(e.numel(), 1024),)](e, out, e.numel(), BLOCK=1024)
    exact = torch.log1p(e.double())
    rel = ((out.double() - exact).abs() / exact.clamp_min(torch.finfo(torch.float64).tiny))
    rel = torch.where(exact == 0, (out.double() - exact).abs(), rel)
    assert rel.max().item() <= max_rel, f"largest relative error {rel.max().item():.3g}"
