"""gsweep's PyTorch peer: the standard grokking recipe as a PyTorch user would train it.

A LayerNorm-free transformer (depth 1 by default) on (x + y) mod p, inputs ``x y =``, full-batch
AdamW (lr 1e-3, weight decay 1.0, betas (0.9, 0.98), eps 1e-8, no warm-up), trained on the same
examples as gsweep's run with the same data seed (the split below is gsweep's ``modular`` split,
re-implemented), every weight drawn N(0, 1/fan_in) and biases zero, as in gsweep's model. Two ways
to train many runs:

  --mode loop   one model after another (each a plain training loop)
  --mode vmap   an ensemble stepped together with torch.func (stack_module_state + vmap)

Prints one JSON line: seconds per model-step (training steps only, after warm-up), and, with
--track (loop), each model's first evaluated step at which train and test accuracy reach the
threshold. Model m is seeded with --seed + m. Float32 matmuls are exact unless --tf32 is given.
Standalone: imports torch and numpy only, so it runs as ``python torch_peer.py`` anywhere.
"""

import argparse
import hashlib
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads, d_mlp, seq):
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.qkv = nn.Parameter(torch.randn(d, 3 * d) / math.sqrt(d))
        self.out = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        self.w_in = nn.Parameter(torch.randn(d, d_mlp) / math.sqrt(d))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.w_out = nn.Parameter(torch.randn(d_mlp, d) / math.sqrt(d_mlp))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)))

    def forward(self, h):
        b, t, d = h.shape
        q, k, v = (h @ self.qkv).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, self.dh).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.dh)
        att = att.masked_fill(~self.mask, float("-inf")).softmax(-1)
        h = h + (att @ v).transpose(1, 2).reshape(b, t, d) @ self.out
        return h + F.relu(h @ self.w_in + self.b_in) @ self.w_out + self.b_out


class Transformer(nn.Module):
    def __init__(self, p, d=128, heads=4, d_mlp=512, depth=1, seq=3):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(p + 1, d) / math.sqrt(d))
        self.pos = nn.Parameter(torch.randn(seq, d) / math.sqrt(d))
        self.blocks = nn.ModuleList([Block(d, heads, d_mlp, seq) for _ in range(depth)])
        self.unembed = nn.Parameter(torch.randn(d, p) / math.sqrt(d))

    def forward(self, x):  # x: [batch, 3] token ids; the answer is read at the last position
        h = self.embed[x] + self.pos
        for blk in self.blocks:
            h = blk(h)
        return h[:, -1] @ self.unembed


def split(n, frac, data_seed):
    """gsweep's modular split: a permutation from sha256 of (task name, data seed, 'split')."""
    digest = hashlib.sha256(repr(["modular", int(data_seed), "split"]).encode()).digest()
    perm = np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32)).permutation(n)
    k = int(min(n, max(1, int(frac * n + 1e-9))))
    return torch.from_numpy(perm[:k].copy()), torch.from_numpy(perm[k:].copy())


def dataset(p, frac, data_seed, device):
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)
    y = (a.flatten() + b.flatten()) % p
    tr, te = split(p * p, frac, data_seed)
    return x[tr].to(device), y[tr].to(device), x[te].to(device), y[te].to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_model(args, device):
    return Transformer(args.p, d=args.d_model, heads=args.heads, d_mlp=args.d_mlp, depth=args.depth).to(device)


def adamw(params, args):
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd, betas=(args.b1, args.b2), eps=1e-8)


def run_loop(args, device):
    xtr, ytr, xte, yte = dataset(args.p, args.frac, args.data_seed, device)
    total_steps, first_train, first_test, elapsed = 0, [], [], 0.0
    for m in range(args.models):
        torch.manual_seed(args.seed + m)
        model = make_model(args, device)
        opt = adamw(model.parameters(), args)
        ft = fg = None
        sync(device)
        t0 = time.perf_counter()
        for step in range(1, args.steps + 1):
            loss = F.cross_entropy(model(xtr), ytr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if args.track and step % args.eval_every == 0:
                with torch.no_grad():
                    tr_acc = (model(xtr).argmax(-1) == ytr).float().mean().item()
                    te_acc = (model(xte).argmax(-1) == yte).float().mean().item()
                ft = step if ft is None and tr_acc >= args.threshold else ft
                fg = step if fg is None and te_acc >= args.threshold else fg
        sync(device)
        elapsed += time.perf_counter() - t0
        first_train.append(ft)
        first_test.append(fg)
        total_steps += args.steps
    out = {"s_per_model_step": elapsed / total_steps}
    if args.track:
        out.update(first_train_step=first_train, first_test_step=first_test,
                   note="timing includes the evaluations when --track is given")
    return out


def run_vmap(args, device):
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    xtr, ytr, _, _ = dataset(args.p, args.frac, args.data_seed, device)
    models = []
    for m in range(args.models):
        torch.manual_seed(args.seed + m)
        models.append(make_model(args, device))
    params, buffers = stack_module_state(models)
    base = make_model(args, "meta")

    def loss_fn(p_, b_):
        return F.cross_entropy(functional_call(base, (p_, b_), (xtr,)), ytr)

    step_fn = vmap(grad_and_value(loss_fn))
    # AdamW is elementwise, so one optimizer over the stacked tensors is one optimizer per model.
    opt = adamw(list(params.values()), args)

    def step():
        grads, _ = step_fn(params, buffers)
        for k, g in grads.items():
            params[k].grad = g
        opt.step()

    for _ in range(3):  # warm-up
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    return {"s_per_model_step": (time.perf_counter() - t0) / (args.steps * args.models)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["loop", "vmap"], default="loop")
    ap.add_argument("--models", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--frac", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=1.0)
    ap.add_argument("--b1", type=float, default=0.9)
    ap.add_argument("--b2", type=float, default=0.98)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-mlp", type=int, default=512)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="model m is seeded with seed + m")
    ap.add_argument("--data-seed", type=int, default=0, help="gsweep's task.data_seed")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    ap.add_argument("--track", action="store_true", help="record when each model fits and generalises")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.99)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    out = run_loop(args, device) if args.mode == "loop" else run_vmap(args, device)
    out.update(mode=args.mode, models=args.models, steps=args.steps, p=args.p, frac=args.frac, wd=args.wd,
               lr=args.lr, d_model=args.d_model, heads=args.heads, d_mlp=args.d_mlp, depth=args.depth,
               seed=args.seed, data_seed=args.data_seed, tf32=args.tf32,
               model_steps_per_s=1.0 / out["s_per_model_step"], device=str(device),
               device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               torch=torch.__version__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
