"""Bad shapes, dtypes and devices raise ValueError/TypeError naming the argument; the loss's
bad options and empty batches are refused with what was found."""
import pytest
import torch

import fastair
from fastair.errors import EmptyBatch, FastairError
from fastair.nn import IWAELoss, iwae_loss


def good(k=3, b=4, d=5, z=2):
    return dict(x=torch.zeros(b, d), logits=torch.zeros(k, b, d), z=torch.zeros(k, b, z),
                mu=torch.zeros(b, z), logvar=torch.zeros(b, z))


@pytest.mark.parametrize("name,value,error,pattern", [
    ("x", torch.zeros(5, 5), ValueError, r"x: expected shape \[B, D\].*\[4, 5\].*got \[5, 5\]"),
    ("x", torch.zeros(3, 4, 5), ValueError, r"x: expected shape \[B, D\]"),
    ("logits", torch.zeros(4, 5), ValueError, r"logits: expected shape \[k, B, D\]"),
    ("logits", torch.zeros(0, 4, 5), ValueError, r"logits: expected at least one sample"),
    ("z", torch.zeros(2, 4, 2), ValueError, r"z: expected shape \[k, B, Z\].*\[3, 4, 2\]"),
    ("z", torch.zeros(4, 2), ValueError, r"z: expected shape \[k, B, Z\]"),
    ("mu", torch.zeros(5, 2), ValueError, r"mu: expected shape \[B, Z\].*\[4, 2\]"),
    ("logvar", torch.zeros(4, 3), ValueError, r"logvar: expected shape \[B, Z\]"),
    ("logits", torch.zeros(3, 4, 5, dtype=torch.int64), TypeError, r"logits: expected a floating"),
    ("mu", torch.zeros(4, 2, dtype=torch.complex64), TypeError, r"mu: expected a floating"),
    ("z", [[0.0]], TypeError, r"z: expected a torch.Tensor"),
    ("logvar", torch.zeros(4, 2, device="meta"), ValueError, r"logvar: expected a tensor on cpu"),
])
def test_iwae_bernoulli_gaussian_errors(name, value, error, pattern):
    args = good()
    args[name] = value
    with pytest.raises(error, match=pattern):
        fastair.iwae_bernoulli_gaussian(**args)


def test_bernoulli_errors():
    with pytest.raises(ValueError, match=r"x: expected a shape that broadcasts to the shape of "
                                         r"logits, \[3, 4, 5\]"):
        fastair.bernoulli_log_prob(torch.zeros(3, 4, 5), torch.zeros(7, 5))
    with pytest.raises(ValueError, match=r"x: expected a shape that broadcasts"):
        fastair.bernoulli_log_prob(torch.zeros(4, 5), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"logits: expected shape \[\.\.\., D\]"):
        fastair.bernoulli_log_prob(torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(TypeError, match=r"logits: expected a floating"):
        fastair.bernoulli_log_prob(torch.zeros(3, dtype=torch.int32), torch.zeros(3))
    with pytest.raises(ValueError, match=r"x: expected a tensor on cpu"):
        fastair.bernoulli_log_prob(torch.zeros(3), torch.zeros(3, device="meta"))


def test_gaussian_errors():
    with pytest.raises(ValueError,
                       match=r"mu: expected a shape that broadcasts to the shape of z, \[3, 4\]"):
        fastair.gaussian_log_prob(torch.zeros(3, 4), torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"logvar: expected a shape that broadcasts"):
        fastair.gaussian_log_prob(torch.zeros(3, 4), torch.zeros(4), torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match=r"logvar: expected a floating"):
        fastair.gaussian_log_prob(torch.zeros(3, 4), None, torch.zeros(4, dtype=torch.long))


def test_iwae_bound_errors():
    with pytest.raises(ValueError, match=r"dim: expected an int in \[-2, 1\]"):
        fastair.iwae_bound(torch.zeros(3, 4), dim=2)
    with pytest.raises(ValueError, match=r"log_w: expected at least one sample along dim 0"):
        fastair.iwae_bound(torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"log_w: expected at least one dim"):
        fastair.iwae_bound(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"log_w: expected a torch.Tensor"):
        fastair.iwae_bound([1.0, 2.0])


@pytest.mark.parametrize("check_input", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_loss_of_an_empty_batch_is_a_named_error(check_input, reduction):
    """Not torch's ``min()`` error (check_input=True) nor a silent NaN (check_input=False)."""
    decoder = torch.nn.Linear(3, 6)
    x, mu, logvar = torch.zeros(0, 6), torch.zeros(0, 3), torch.zeros(0, 3)
    pattern = r"x: the batch is empty \(x of shape \[0, 6\], mu \[0, 3\]\).*skip empty batches"
    with pytest.raises(EmptyBatch, match=pattern):
        iwae_loss(x, mu, logvar, decoder, k=2, reduction=reduction, check_input=check_input)
    for k_chunk in (None, 1):
        loss_fn = IWAELoss(k=2, reduction=reduction, check_input=check_input, k_chunk=k_chunk)
        with pytest.raises(EmptyBatch, match=pattern):
            loss_fn(x, mu, logvar, decoder)
    assert issubclass(EmptyBatch, ValueError) and issubclass(EmptyBatch, FastairError)


@pytest.mark.parametrize("k", [-1, 0, 2.5, 2.0, True, "4", None])
def test_iwae_loss_refuses_a_bad_k_when_it_is_made(k):
    with pytest.raises(ValueError, match=r"k: expected an int >= 1, got "):
        IWAELoss(k=k)
