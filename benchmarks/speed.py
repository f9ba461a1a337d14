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

    python benchmarks/speed.py [compare|methods|svgd|scaling|sharding|all] [--steps 500]

``compare`` writes ``speed.json`` (the table above); ``methods`` every method's meta-step
relative to MAML; ``svgd`` our SVGD step against NumPyro's SteinVI on one task's posterior;
``scaling`` steps/s against meta-batch, support size, width and particles (JSON + PNG);
``sharding`` MAML with tasks split over 1, 2, 4 forced host devices.
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


def _torch_task_loop(torch, opt, steps: int, task_backward: Callable):
    """``run()``: ``steps`` meta-steps of a library that adapts one task at a time;
    ``task_backward(xs, ys, xq, yq)`` adapts to one task's support set and back-propagates
    its query loss over ``TASKS``."""

    def run():
        for _ in range(steps):
            xs, ys, xq, yq = _torch_batch(torch)
            opt.zero_grad()
            for i in range(TASKS):
                task_backward(xs[i], ys[i], xq[i], yq[i])
            opt.step()

    return run


def make_higher(steps: int, threads: int | None = None):
    torch, net = _torch_setup(threads)
    import higher

    opt = torch.optim.Adam(net.parameters(), lr=LR)
    inner_opt = torch.optim.SGD(net.parameters(), lr=INNER_LR)

    def task_backward(xs, ys, xq, yq):
        with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False) as (f, d):
            d.step(torch.mean((f(xs) - ys) ** 2))
            (torch.mean((f(xq) - yq) ** 2) / TASKS).backward()

    return _torch_task_loop(torch, opt, steps, task_backward)


def make_learn2learn(steps: int, threads: int | None = None):
    torch, net = _torch_setup(threads)
    import learn2learn as l2l

    meta = l2l.algorithms.MAML(net, lr=INNER_LR, first_order=False)
    opt = torch.optim.Adam(meta.parameters(), lr=LR)

    def task_backward(xs, ys, xq, yq):
        learner = meta.clone()
        learner.adapt(torch.mean((learner(xs) - ys) ** 2))
        (torch.mean((learner(xq) - yq) ** 2) / TASKS).backward()

    return _torch_task_loop(torch, opt, steps, task_backward)


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
    # VmHWM of the child's own address space (ru_maxrss would carry over the parent's peak
    # through fork and exec)
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import speed; r = speed.IMPLEMENTATIONS[{name!r}]({steps}); r(); r(); "
        "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])"
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


# ---------------------------------------------------------------------------------------------
# every method per meta-step, SVGD against NumPyro's SteinVI, scaling, sharding
# ---------------------------------------------------------------------------------------------
def _chunk_steps_per_s(
    method, sampler, steps: int, repeats: int, min_block_s: float = 0.3
) -> tuple[float, float]:
    """(steps/s, compile seconds) of the library's jitted chunk runner: best of ``repeats``
    timed blocks, each of as many chunk calls as fill ``min_block_s`` (a single short chunk
    is dominated by dispatch and timer noise)."""
    from bayesmeta.inference.train import make_chunk_runner

    run = make_chunk_runner(method, sampler, steps)
    t0 = time.perf_counter()
    out = jax.block_until_ready(run(method.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(run(out[0], out[1]))
    one = time.perf_counter() - t0
    calls = max(1, math.ceil(min_block_s / max(one, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = run(out[0], out[1])
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / calls)
    return steps / best, max(first - best, 0.0)


def main_methods(args) -> dict:
    """Every method's meta-step on the same work, relative to MAML."""
    from bayesmeta.zoo import METHOD_FACTORIES

    model, sampler = bayesmeta_model(), bayesmeta_sampler()
    rows = {}
    for name, factory in METHOD_FACTORIES.items():
        kw = {} if name == "neural-process" else {"inner_steps": 1}
        sps, comp = _chunk_steps_per_s(factory(model, **kw), sampler, args.steps // 5, 3)
        rows[name] = {"steps_per_s": sps, "compile_s": comp}
        print(f"{name:16s} {sps:9.1f} steps/s  compile {comp:5.1f} s", flush=True)
    for r in rows.values():
        r["ratio_vs_maml"] = r["steps_per_s"] / rows["maml"]["steps_per_s"]
    return {"work": "as compare; every method with one inner step, defaults otherwise", **rows}


def main_svgd(args) -> dict:
    """One sinusoid task's posterior over the 1761 weights: our SVGD step against
    ``numpyro.contrib.einstein.SVGD`` (same model, same particles, RBF kernel)."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.einstein import SVGD, RBFKernel
    from numpyro.optim import Adagrad

    from bayesmeta.inference import svgd

    model = bayesmeta_model()
    theta = model.init_theta(jax.random.PRNGKey(0))
    batch = bayesmeta_sampler(1)(jax.random.PRNGKey(2))
    x, y = batch.x_support[0], batch.y_support[0]
    sigma = jnp.exp(theta["log_sigma"])

    def log_post(phi):
        return model.log_prior(theta, phi) + model.log_likelihood(theta, phi, x, y)

    def np_model(x, y):
        phi = numpyro.sample("phi", dist.Normal(theta["mu"], sigma).to_event(1))
        numpyro.sample("y", dist.Normal(model.apply(phi, x), 0.3).to_event(1), obs=y)

    def timed(f, arg, n_calls=3):
        jax.block_until_ready(f(arg))
        best = float("inf")
        for _ in range(n_calls):
            t0 = time.perf_counter()
            jax.block_until_ready(f(arg))
            best = min(best, time.perf_counter() - t0)
        return best

    n = args.svgd_steps
    out = {"steps_per_call": n, "dim": int(theta["mu"].size)}
    for m in (8, 32):
        x0 = theta["mu"] + sigma * jax.random.normal(jax.random.PRNGKey(1), (m, theta["mu"].size))
        ours = jax.jit(lambda z: svgd.run(z, jax.grad(log_post), 1e-3, n))
        stein = SVGD(np_model, Adagrad(1e-3), RBFKernel(), num_stein_particles=m)
        st0 = stein.init(jax.random.PRNGKey(0), x, y)

        # both as n steps of one lax.scan inside one jit, so neither pays dispatch per step
        @jax.jit
        def theirs(st, stein=stein):
            return jax.lax.scan(lambda s, _: stein.update(s, x, y), st, None, length=n)[0]

        ours_sps = n / timed(ours, x0)
        theirs_sps = n / timed(theirs, st0)
        out[f"particles_{m}"] = {
            "bayesmeta_steps_per_s": ours_sps,
            "numpyro_steinvi_steps_per_s": theirs_sps,
            "ratio": ours_sps / theirs_sps,
        }
        print(f"SVGD M={m}: ours {ours_sps:.1f}/s, SteinVI {theirs_sps:.1f}/s", flush=True)
    return out


SCALING = {
    "meta_batch": (1, 4, 16, 64, 256, 512),
    "support": (5, 10, 20, 50, 100),
    "width": (10, 40, 160, 640),
    "particles": (1, 2, 4, 8, 16, 32, 64),
}


def main_scaling(args) -> dict:
    """Steps/s of MAML against meta-batch size, support size and width, and of BMAML and one
    SVGD kernel step against the number of particles."""
    from bayesmeta.inference import bmaml, maml, svgd

    out: dict[str, list] = {k: [] for k in SCALING}
    steps = max(args.steps // 10, 10)
    for t in SCALING["meta_batch"]:
        method = maml(bayesmeta_model(), inner_steps=1, inner_lr=INNER_LR)
        sps, _ = _chunk_steps_per_s(method, bayesmeta_sampler(tasks=t), steps, 3)
        out["meta_batch"].append({"value": t, "steps_per_s": sps, "tasks_per_s": sps * t})
        print(f"meta_batch {t:4d}: {sps:8.1f} steps/s", flush=True)
    for k in SCALING["support"]:
        method = maml(bayesmeta_model(), inner_steps=1, inner_lr=INNER_LR)
        sps, _ = _chunk_steps_per_s(method, bayesmeta_sampler(k=k), steps, 3)
        out["support"].append({"value": k, "steps_per_s": sps})
        print(f"support {k:4d}: {sps:8.1f} steps/s", flush=True)
    for w in SCALING["width"]:
        model = bayesmeta_model(w)
        method = maml(model, inner_steps=1, inner_lr=INNER_LR)
        sps, _ = _chunk_steps_per_s(method, bayesmeta_sampler(), steps, 3)
        out["width"].append({"value": w, "steps_per_s": sps, "num_params": model.num_params})
        print(f"width {w:4d}: {sps:8.1f} steps/s", flush=True)
    model = bayesmeta_model()
    d = model.num_params
    for m in SCALING["particles"]:
        method = bmaml(model, num_particles=m, inner_steps=1, meta_sgd=True, inner_lr=0.1)
        sps, _ = _chunk_steps_per_s(method, bayesmeta_sampler(), max(steps // 4, 5), 2)
        # the kernel alone (M² D) against the M score evaluations it is paired with
        x0 = jax.random.normal(jax.random.PRNGKey(0), (m, d))
        scores = jax.random.normal(jax.random.PRNGKey(1), (m, d))
        kern = jax.jit(lambda z, s: svgd.direction(z, s))
        jax.block_until_ready(kern(x0, scores))
        t0 = time.perf_counter()
        for _ in range(20):
            r = kern(x0, scores)
        jax.block_until_ready(r)
        kernel_ms = (time.perf_counter() - t0) / 20 * 1e3
        out["particles"].append(
            {"value": m, "bmaml_steps_per_s": sps, "kernel_ms": kernel_ms, "dim": d}
        )
        print(f"particles {m:3d}: BMAML {sps:8.1f} steps/s, kernel {kernel_ms:.3f} ms", flush=True)
    return out


def plot_scaling(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    specs = [
        ("meta_batch", "tasks_per_s", "meta-batch size (tasks)", "tasks / s (MAML)"),
        ("support", "steps_per_s", "support points K", "meta-steps / s (MAML)"),
        ("width", "steps_per_s", "hidden width", "meta-steps / s (MAML)"),
        ("particles", "bmaml_steps_per_s", "particles M", "meta-steps / s (BMAML)"),
    ]
    for ax, (key, field, xl, yl) in zip(axes, specs, strict=True):
        rows = res[key]
        ax.loglog([r["value"] for r in rows], [r[field] for r in rows], "o-", color="C0")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        if key == "particles":
            ax2 = ax.twinx()
            ax2.loglog(
                [r["value"] for r in rows], [r["kernel_ms"] for r in rows], "s--", color="C3"
            )
            ax2.set_ylabel("SVGD kernel alone (ms)", color="C3")
    fig.suptitle(f"bayesmeta scaling on {jax.devices()[0].device_kind} ({os.cpu_count()} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_sharding(args) -> dict:
    """MAML meta-steps/s with tasks sharded over 1, 2 and 4 forced host devices (each in a
    child process, since the device count is fixed when jax starts)."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import speed, jax; "
        "from bayesmeta.inference import maml, train; from bayesmeta.parallel import task_mesh; "
        "import time; m = maml(speed.bayesmeta_model(), inner_steps=1); "
        "s = speed.bayesmeta_sampler(tasks=64); st = m.init(jax.random.PRNGKey(0)); "
        "mesh = task_mesh(); k = jax.random.PRNGKey(1); "
        f"r = train(m, st, s, k, {args.steps // 5}, chunk_size={args.steps // 5}, mesh=mesh); "
        "t0 = time.perf_counter(); "
        f"r = train(m, r.state, s, r.key, {args.steps // 5}, chunk_size={args.steps // 5}, "
        "mesh=mesh); "
        f"print({args.steps // 5} / (time.perf_counter() - t0))"
    )
    out = {}
    for n in (1, 2, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
        )
        sps = float(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
        out[f"devices_{n}"] = {"steps_per_s": sps, "tasks_per_s": sps and sps * 64}
        print(f"{n} host devices: {sps} steps/s (64 tasks per step)", flush=True)
    base = out["devices_1"]["steps_per_s"]
    for r in out.values():
        r["speedup"] = r["steps_per_s"] / base if base and r["steps_per_s"] else None
    return out


def _write_json(path: Path, obj: dict) -> None:
    from bayesmeta.atomic import write_text

    write_text(path, json.dumps(obj, indent=2, default=float))
    print(f"wrote {path}")


def _machine() -> dict:
    info = {
        "platform": platform.platform(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    from bayesmeta.bench import git_commit, script_command

    info["commit"] = git_commit(Path(__file__).parent)
    info["command"] = script_command(__file__)
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "what",
        nargs="?",
        default="compare",
        choices=["compare", "methods", "svgd", "scaling", "sharding", "all"],
    )
    p.add_argument("--steps", type=int, default=500, help="JAX meta-steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--svgd-steps", type=int, default=200)
    p.add_argument("--skip", nargs="*", default=[], choices=list(IMPLEMENTATIONS))
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and PNG")
    args = p.parse_args(argv)
    todo = (
        ["compare", "methods", "svgd", "scaling", "sharding"] if args.what == "all" else [args.what]
    )
    for what in todo:
        if what == "compare":
            out = main_compare(args)
            _print_compare(out)
            _write_json(args.out / "speed.json", {**out, "machine": _machine()})
        elif what == "scaling":
            out = main_scaling(args)
            _write_json(args.out / "speed_scaling.json", {**out, "machine": _machine()})
            plot_scaling(out, args.out / "speed_scaling.png")
        else:
            fn = {"methods": main_methods, "svgd": main_svgd, "sharding": main_sharding}[what]
            _write_json(args.out / f"speed_{what}.json", {**fn(args), "machine": _machine()})


if __name__ == "__main__":
    main()
