"""The floor under any loss called from eager code: one training step of bench_peers' networks
(784-200-200-50 tanh, B = 100, Adam) whose loss costs nothing (the decoder's output averaged),
beside the plain-torch IWAE loss and fastair's drop-in loss (head, logits, logits without the
input check) in the same process, interleaved rounds. If the floor is already at
``torch.compile``'s whole step (bench_peers), no eager-called loss can beat compile there.

    python -m bench.peers_floor --k 1 --precision fp32
    python -m bench.peers_floor --k 8 --precision bf16 --out bench/results/peers_cpu/floor.md
"""
import argparse
import statistics

import torch

from bench.bench_peers import Z, make_networks, plain_negative_bound
from bench.common import machine_line, time_ms
from fastair.data import load_dataset
from fastair.nn import IWAELoss

KINDS = ("floor", "eager", "fastair head", "fastair logits", "fastair logits, no check")


def make_step(kind, k, bf16, x):
    enc, dec = make_networks(0, [x])
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    loss_fn = IWAELoss(k=k, check_input=not kind.endswith("no check"))

    def body():
        if kind == "floor":
            mu, logvar = enc(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(k, x.shape[0], Z)
            return dec(z).float().mean()
        if kind == "eager":
            return plain_negative_bound(enc, dec, x, torch.randn(k, x.shape[0], Z))
        mu, logvar = enc(x)
        if kind == "fastair head":
            return loss_fn(x, mu, logvar, dec.trunk, head=dec.out)
        return loss_fn(x, mu, logvar, dec)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = body()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = load_dataset("mnist5k").train[:100]
    steps = {kind: make_step(kind, args.k, args.precision == "bf16", x) for kind in KINDS}
    times = {kind: [] for kind in KINDS}
    for _ in range(args.rounds):
        for kind in KINDS:
            times[kind].append(time_ms(steps[kind], "cpu", target_s=1.0)[0])
    lines = [f"### k = {args.k}, {args.precision}", "",
             machine_line(),
             f"`python -m bench.peers_floor --k {args.k} --precision {args.precision} "
             f"--rounds {args.rounds}`; median over rounds of each round's median step.", "",
             "| step | ms (rounds) |", "|---|---|"]
    for kind in KINDS:
        v = times[kind]
        lines.append(f"| {kind} | {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
