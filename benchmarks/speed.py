"""Meta-training speed of bayesmeta against a hand-fused JAX step and PyTorch peers.

The work (issue 7), the same for every implementation: MAML on the sinusoid (A ~ U[0.1, 5],
b ~ U[0, π], x ~ U[−5, 5], noise 0.3), MLP 1-40-40-1 (ReLU), 25 tasks per meta-batch, K = 10
support and 10 query points, one second-order inner step (α = 0.01), Adam (1e-3). Tasks are
drawn afresh at every step by every implementation.

- ``bayesmeta``: ``maml(...)`` from the library, run by its training loop ``train`` (chunks
  of ``lax.scan`` inside one jit, a finiteness check and a progress update per chunk).
- ``fused_jax``: the limit for this work, written here: one ``jit`` of ``lax.scan`` over steps
  of ``value_and_grad`` of a vmapped adapted loss, MSE, hand-written Adam.
- ``torch_func``: ``torch.func`` (``vmap`` + ``grad`` + ``functional_call``), Adam from
  ``torch.optim``; ``torch_loop``: plain autograd with ``create_graph`` in a loop over tasks;
  ``higher``: ``higher.innerloop_ctx`` in a loop over tasks (as its examples). Each torch
  peer runs with the default thread count and with one thread; the faster counts.

Timings interleave the implementations over ``--repeats`` rounds and keep each one's best
round, so a busy machine slows all alike. Ratios are taken within this one run. Peak memory:
XLA's buffer assignment for the jitted JAX chunk (arguments + outputs + temporaries), and the
peak resident set of a child process that runs only that implementation.

    python benchmarks/speed.py [--steps 500] [--repeats 5] [--out benchmarks/results/speed.json]
    python benchmarks/speed.py scaling   # steps/s against meta-batch, particles, K, width
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

RESULTS = Path(__file__).parent / "results"
TASKS, K, Q, WIDTH, INNER_LR, LR = 25, 10, 10, 40, 0.01, 1e-3


# ---------------------------------------------------------------------------------------------
# bayesmeta through its public API
# ---------------------------------------------------------------------------------------------
def bayesmeta_model(width: int = WIDTH):
    from bayesmeta.model import HierarchicalModel
    from bayesmeta.nn import mlp

    return HierarchicalModel(mlp((1, width, width, 1), activation="relu"), noise_init=0.3)


def bayesmeta_sampler(tasks: int = TASKS, k: int = K, q: int = Q):
    from bayesmeta.tasks import sample_batch, sinusoid

    fam = sinusoid(noise=0.3)
    return lambda key: sample_batch(fam, key, tasks, (k, k), q)[0]


def make_bayesmeta(steps: int, tasks: int = TASKS, k: int = K, width: int = WIDTH, **kw):
    """``run()`` that meta-trains ``steps`` more steps through ``bayesmeta.inference.train``."""
    from bayesmeta.inference import maml, train

    method = maml(bayesmeta_model(width), inner_steps=1, inner_lr=INNER_LR, lr=LR, **kw)
    sampler = bayesmeta_sampler(tasks, k)
    carry = {"state": method.init(jax.random.PRNGKey(0)), "key": jax.random.PRNGKey(1)}

    def run():
        res = train(
            method, carry["state"], sampler, carry["key"], steps, chunk_size=steps, progress=False
        )
        carry["state"], carry["key"] = res.state, res.key
        jax.block_until_ready(res.state.theta)

    return run


# ---------------------------------------------------------------------------------------------
# the hand-fused JAX reference
# ---------------------------------------------------------------------------------------------
def _fused_init(key, width):
    sizes = (1, width, width, 1)
    keys = jax.random.split(key, 3)
    return [
        {"w": jax.random.normal(k, (m, n)) * math.sqrt(2.0 / m), "b": jnp.zeros((n,))}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def _fused_apply(params, x):
    h = x
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def _sinusoid_batch(key, tasks, k, q):
    ka, kb, kx, ke = jax.random.split(key, 4)
    amp = jax.random.uniform(ka, (tasks, 1, 1), minval=0.1, maxval=5.0)
    phase = jax.random.uniform(kb, (tasks, 1, 1), minval=0.0, maxval=math.pi)
    x = jax.random.uniform(kx, (tasks, k + q, 1), minval=-5.0, maxval=5.0)
    y = amp * jnp.sin(x + phase) + 0.3 * jax.random.normal(ke, x.shape)
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def make_fused_chunk(steps: int, tasks: int = TASKS, k: int = K, width: int = WIDTH):
    """The jitted chunk ``(params, m, v, t, key) -> (...)`` and its initial carry."""

    def mse(p, x, y):
        return jnp.mean((_fused_apply(p, x) - y) ** 2)

    def task_loss(p, xs, ys, xq, yq):
        g = jax.grad(mse)(p, xs, ys)
        adapted = jax.tree_util.tree_map(lambda a, b: a - INNER_LR * b, p, g)
        return mse(adapted, xq, yq)

    def meta_loss(p, batch):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, *batch))

    def body(carry, _):
        p, m, v, t, key = carry
        key, kb = jax.random.split(key)
        loss, g = jax.value_and_grad(meta_loss)(p, _sinusoid_batch(kb, tasks, k, k))
        t = t + 1
        m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
        c1, c2 = 1 - 0.9**t, 1 - 0.999**t
        p = jax.tree_util.tree_map(
            lambda a, mm, vv: a - LR * (mm / c1) / (jnp.sqrt(vv / c2) + 1e-8), p, m, v
        )
        return (p, m, v, t, key), loss

    @jax.jit
    def chunk(carry):
        return jax.lax.scan(body, carry, None, length=steps)

    p = _fused_init(jax.random.PRNGKey(0), width)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, p)
    return chunk, (p, zeros, zeros, jnp.zeros(()), jax.random.PRNGKey(1))


def make_fused(steps: int, tasks: int = TASKS, k: int = K, width: int = WIDTH):
    chunk, carry0 = make_fused_chunk(steps, tasks, k, width)
    carry = {"c": carry0}

    def run():
        carry["c"], loss = chunk(carry["c"])
        jax.block_until_ready(loss)

    return run


# ---------------------------------------------------------------------------------------------
# PyTorch peers
# ---------------------------------------------------------------------------------------------
def _torch_setup(threads: int | None, width: int = WIDTH):
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(1, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 1),
    )
    return torch, net


def _torch_batch(torch, tasks=TASKS, k=K, q=Q):
    amp = torch.rand(tasks, 1, 1) * 4.9 + 0.1
    phase = torch.rand(tasks, 1, 1) * math.pi
    x = torch.rand(tasks, k + q, 1) * 10.0 - 5.0
    y = amp * torch.sin(x + phase) + 0.3 * torch.randn(x.shape)
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def make_torch_func(steps: int, threads: int | None = None):
    torch, net = _torch_setup(threads)
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    opt = torch.optim.Adam(params.values(), lr=LR)

    def mse(p, x, y):
        return torch.mean((functional_call(net, p, (x,)) - y) ** 2)

    def task_loss(p, xs, ys, xq, yq):
        g = grad(mse)(p, xs, ys)
        return mse({n: p[n] - INNER_LR * g[n] for n in p}, xq, yq)

    batched = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))

    def run():
        for _ in range(steps):
            loss = batched(params, *_torch_batch(torch)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def make_torch_loop(steps: int, threads: int | None = None):
    torch, net = _torch_setup(threads)
    from torch.func import functional_call

    params = dict(net.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=LR)

    def run():
        for _ in range(steps):
            xs, ys, xq, yq = _torch_batch(torch)
            opt.zero_grad()
            total = 0.0
            for i in range(TASKS):
                inner = torch.mean((functional_call(net, params, (xs[i],)) - ys[i]) ** 2)
                g = torch.autograd.grad(inner, list(params.values()), create_graph=True)
                adapted = {
                    n: p - INNER_LR * gi for (n, p), gi in zip(params.items(), g, strict=True)
                }
                total = total + torch.mean((functional_call(net, adapted, (xq[i],)) - yq[i]) ** 2)
            (total / TASKS).backward()
            opt.step()

    return run


def make_higher(steps: int, threads: int | None = None):
    torch, net = _torch_setup(threads)
    import higher

    opt = torch.optim.Adam(net.parameters(), lr=LR)
    inner_opt = torch.optim.SGD(net.parameters(), lr=INNER_LR)

    def run():
        for _ in range(steps):
            xs, ys, xq, yq = _torch_batch(torch)
            opt.zero_grad()
            for i in range(TASKS):
                with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False) as (f, d):
                    d.step(torch.mean((f(xs[i]) - ys[i]) ** 2))
                    (torch.mean((f(xq[i]) - yq[i]) ** 2) / TASKS).backward()
            opt.step()

    return run


def make_learn2learn(steps: int, threads: int | None = None):
    torch, net = _torch_setup(threads)
    import learn2learn as l2l

    meta = l2l.algorithms.MAML(net, lr=INNER_LR, first_order=False)
    opt = torch.optim.Adam(meta.parameters(), lr=LR)

    def run():
        for _ in range(steps):
            xs, ys, xq, yq = _torch_batch(torch)
            opt.zero_grad()
            for i in range(TASKS):
                learner = meta.clone()
                learner.adapt(torch.mean((learner(xs[i]) - ys[i]) ** 2))
                (torch.mean((learner(xq[i]) - yq[i]) ** 2) / TASKS).backward()
            opt.step()

    return run


IMPLEMENTATIONS: dict[str, Callable[..., Callable[[], None]]] = {
    "bayesmeta": make_bayesmeta,
    "fused_jax": make_fused,
    "torch_func": make_torch_func,
    "torch_loop": make_torch_loop,
    "higher": make_higher,
    "learn2learn": make_learn2learn,
}
TORCH = ("torch_func", "torch_loop", "higher", "learn2learn")


def _available(name: str) -> str | None:
    """None if ``name`` can run here, else why not."""
    mods = {"torch_func": "torch", "torch_loop": "torch", "higher": "higher"}
    mods["learn2learn"] = "learn2learn"
    mod = mods.get(name)
    if mod is None:
        return None
    try:
        __import__(mod)
    except Exception as err:  # an optional peer that fails to import is reported, not fatal
        return f"{type(err).__name__}: {err}"
    return None


def time_blocks(runners: dict[str, Callable[[], None]], steps: dict[str, int], repeats: int):
    """Best seconds per step of each runner over ``repeats`` interleaved rounds; also the
    first call's (compile) seconds."""
    first, best = {}, {n: float("inf") for n in runners}
    for n, run in runners.items():
        t0 = time.perf_counter()
        run()
        first[n] = time.perf_counter() - t0
    for _ in range(repeats):
        for n, run in runners.items():
            t0 = time.perf_counter()
            run()
            best[n] = min(best[n], (time.perf_counter() - t0) / steps[n])
    return best, first


def xla_memory(steps: int) -> dict[str, int]:
    """Bytes XLA assigns to the jitted chunk of the library's and the fused loop."""
    from bayesmeta.inference import maml
    from bayesmeta.inference.train import make_chunk_runner

    method = maml(bayesmeta_model(), inner_steps=1, inner_lr=INNER_LR, lr=LR)
    run = make_chunk_runner(method, bayesmeta_sampler(), steps)
    state = method.init(jax.random.PRNGKey(0))
    ours = run.lower(state, jax.random.PRNGKey(1)).compile().memory_analysis()
    chunk, carry = make_fused_chunk(steps)
    fused = chunk.lower(carry).compile().memory_analysis()

    def total(m):
        if m is None:
            return None
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)

    return {"bayesmeta": total(ours), "fused_jax": total(fused)}


def child_peak_rss(name: str, steps: int) -> float | None:
    """Peak resident set (MiB) of a child process that runs only ``name`` for ``steps``."""
    code = (
        f"import sys, resource; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import speed; r = speed.IMPLEMENTATIONS[{name!r}]({steps}); r(); r(); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
        )
        return int(out.stdout.strip().splitlines()[-1]) / 1024.0
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def main_compare(args) -> dict:
    names = [n for n in IMPLEMENTATIONS if n not in args.skip]
    skipped = {}
    runners, steps = {}, {}
    for n in names:
        why = _available(n)
        if why is not None:
            skipped[n] = why
            print(f"{n}: not run ({why})", flush=True)
            continue
        if n in TORCH:
            # the torch peers run step by step in Python: fewer steps per timed block
            s = max(args.steps // 10, 10)
            for threads in (None, 1):
                label = n if threads is None else f"{n}@1thread"
                runners[label], steps[label] = IMPLEMENTATIONS[n](s, threads), s
        else:
            runners[n], steps[n] = IMPLEMENTATIONS[n](args.steps), args.steps
    if "bayesmeta" in runners:
        lean = dict(learn_inner_lr=False, max_inner_update=None, grad_clip=None)
        runners["bayesmeta_lean"] = make_bayesmeta(args.steps, **lean)
        steps["bayesmeta_lean"] = args.steps
    best, first = time_blocks(runners, steps, args.repeats)
    rows = {}
    for label, sec in best.items():
        rows[label] = {
            "steps_per_s": 1.0 / sec,
            "ms_per_step": 1e3 * sec,
            "first_call_s": first[label],
            "compile_s": max(first[label] - sec * steps[label], 0.0),
        }
    for n in TORCH:
        cands = [lbl for lbl in rows if lbl.split("@")[0] == n]
        if cands:
            top = max(cands, key=lambda lbl: rows[lbl]["steps_per_s"])
            rows[n + "_best"] = {**rows[top], "config": top}
    ours = rows["bayesmeta"]["steps_per_s"]
    out = {
        "work": {
            "network": f"MLP 1-{WIDTH}-{WIDTH}-1 relu",
            "tasks": TASKS,
            "k_support": K,
            "k_query": Q,
            "inner_steps": 1,
            "order": "second",
            "optimizer": "adam",
        },
        "implementations": rows,
        "not_run": skipped,
        "ratio_vs_fused_jax": ours / rows["fused_jax"]["steps_per_s"],
    }
    if "bayesmeta_lean" in rows:
        out["ratio_lean_vs_fused_jax"] = (
            rows["bayesmeta_lean"]["steps_per_s"] / rows["fused_jax"]["steps_per_s"]
        )
    if "torch_func_best" in rows:
        out["ratio_vs_torch_func"] = ours / rows["torch_func_best"]["steps_per_s"]
    for n in ("torch_loop", "higher", "learn2learn"):
        if n + "_best" in rows:
            out[f"ratio_vs_{n}"] = ours / rows[n + "_best"]["steps_per_s"]
    if not args.no_memory:
        out["xla_bytes"] = xla_memory(args.steps)
        out["peak_rss_mib"] = {
            n: child_peak_rss(n, steps[n]) for n in IMPLEMENTATIONS if n in runners
        }
    return out


def _print_compare(out: dict) -> None:
    print(f"\n{'implementation':28s} {'steps/s':>10s} {'ms/step':>9s} {'compile s':>10s}")
    for label, r in out["implementations"].items():
        if label.endswith("_best"):
            continue
        print(
            f"{label:28s} {r['steps_per_s']:10.1f} {r['ms_per_step']:9.3f} {r['compile_s']:10.2f}"
        )
    print()
    for k, v in out.items():
        if k.startswith("ratio"):
            print(f"{k:28s} {v:8.3f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    p.add_argument("--steps", type=int, default=500, help="JAX meta-steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip", nargs="*", default=[], choices=list(IMPLEMENTATIONS))
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    sub.add_parser("compare")
    args = p.parse_args(argv)
    out = main_compare(args)
    _print_compare(out)
    out["machine"] = {
        "platform": platform.platform(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import torch

        out["machine"]["torch"] = torch.__version__
    except ImportError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2, default=float))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
