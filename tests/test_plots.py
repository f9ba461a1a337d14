"""Tests of bayesmeta.plots: files written, layout, and the numbers the figures show."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

from bayesmeta.plots import (
    PALETTE,
    _predictive_quantiles,
    _select_tasks,
    calibration_curves,
    learning_curves,
    method_color,
    metric_bars,
    pit_histograms,
    predictive_bands,
    reliability_diagram,
    training_curves,
)
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks import sample_batch, sinusoid

NOISE = 0.3


@pytest.fixture(scope="module")
def setup():
    family = sinusoid(noise=NOISE)
    batch, params = sample_batch(family, jax.random.PRNGKey(0), 4, (2, 6), 10)
    s = 32
    eps = jax.random.normal(jax.random.PRNGKey(1), (4, s, 2))
    truth = TaskPosterior.from_samples(
        params[:, None, :] + 1e-3 * eps, NOISE, family.mean_fn, method="reference"
    )
    wide = TaskPosterior.from_samples(
        params[:, None, :] + 0.3 * eps, NOISE, family.mean_fn, method="abml"
    )
    return family, batch, params, truth, wide


def _check_png(path, fig):
    assert isinstance(fig, Figure)
    assert path.exists()
    assert path.stat().st_size > 5_000


def test_predictive_quantiles_match_gaussian_at_truth(setup):
    family, _, params, truth, _ = setup
    x = jnp.linspace(-4.0, 4.0, 5)[None, :, None].repeat(4, axis=0)
    levels = (0.05, 0.5, 0.95)
    q = _predictive_quantiles(truth, x, jax.random.PRNGKey(2), levels, num_draws=4000)
    assert q.shape == (3, 4, 5, 1)
    f = np.asarray(jax.vmap(family.mean_fn)(params, x))  # (T, N, 1)
    z = 1.6448536
    np.testing.assert_allclose(q[0], f - z * NOISE, atol=0.05)
    np.testing.assert_allclose(q[1], f, atol=0.05)
    np.testing.assert_allclose(q[2], f + z * NOISE, atol=0.05)


def test_predictive_quantiles_respect_weights(setup):
    # Two samples, all weight on the second: the quantiles are those of the second alone.
    family, _, params, _, _ = setup
    phi = jnp.stack([params[:1] + jnp.array([[2.0, 0.0]]), params[:1]], axis=1)  # (1, 2, 2)
    post = TaskPosterior(
        phi, jnp.log(jnp.array([[1e-9, 1.0 - 1e-9]])), jnp.full((1, 2), NOISE), family.mean_fn
    )
    x = jnp.array([[[1.0]]])
    q = _predictive_quantiles(post, x, jax.random.PRNGKey(3), (0.05, 0.95), num_draws=4000)
    f = float(family.mean_fn(params[0], x[0])[0, 0])
    np.testing.assert_allclose(q[:, 0, 0, 0], [f - 1.645 * NOISE, f + 1.645 * NOISE], atol=0.05)


def test_select_tasks(setup):
    _, _, _, _, wide = setup
    sub = _select_tasks(wide, [2, 0])
    assert sub.num_tasks == 2
    np.testing.assert_array_equal(np.asarray(sub.phi[0]), np.asarray(wide.phi[2]))
    np.testing.assert_array_equal(np.asarray(sub.phi[1]), np.asarray(wide.phi[0]))


def test_predictive_bands(setup, tmp_path):
    family, batch, params, truth, wide = setup

    def true_fn(i, xg):
        return family.mean_fn(params[i], jnp.asarray(xg)[:, None])[:, 0]

    path = tmp_path / "sub" / "bands.png"
    fig = predictive_bands(
        {"abml": wide, "reference": truth},  # reference must come first regardless
        batch.x_support,
        batch.y_support,
        batch.mask_support,
        task_indices=(0, 1, 3),
        true_fn=true_fn,
        num_draws=300,
        path=path,
    )
    _check_png(path, fig)
    axes = fig.axes
    assert len(axes) == 2 * 3
    assert axes[0].get_ylabel().startswith("reference")
    assert axes[3].get_ylabel().startswith("abml")
    # y limits shared within a column, and K annotated from the mask
    for c in range(3):
        assert axes[c].get_ylim() == axes[3 + c].get_ylim()
    k = np.asarray(batch.mask_support).sum(-1).astype(int)
    texts = [t.get_text() for t in axes[2].texts]
    assert f"K = {k[3]}" in texts
    # the plotted support points are the real ones only
    offsets = axes[0].collections[-1].get_offsets()
    assert len(offsets) == k[0]


def test_predictive_bands_rejects_bad_indices(setup):
    _, batch, _, truth, _ = setup
    with pytest.raises(ValueError, match="out of range"):
        predictive_bands(
            {"reference": truth},
            batch.x_support,
            batch.y_support,
            batch.mask_support,
            task_indices=(0, 7),
        )


def test_calibration_curves(tmp_path):
    levels = np.linspace(0.05, 0.95, 19)
    curves = {"abml": (levels, levels**1.5), "reference": (levels, levels + 0.01)}
    path = tmp_path / "cal.png"
    fig = calibration_curves(curves, path=path)
    _check_png(path, fig)
    assert len(fig.axes) == 1
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    ce = np.mean(np.abs(levels**1.5 - levels))
    assert f"abml  (CE {ce:.3f})" in labels
    assert "reference  (CE 0.010)" in labels


def test_pit_histograms(tmp_path):
    rng = np.random.default_rng(0)
    pits = {
        "abml": rng.uniform(size=500),
        "maml": rng.beta(0.4, 0.4, size=500),
        "bmaml": rng.beta(3, 3, size=500),
    }
    path = tmp_path / "pit.png"
    fig = pit_histograms(pits, bins=10, path=path)
    _check_png(path, fig)
    assert len(fig.axes) == 3
    # the U-shaped (over-confident) one has far more mass in the outer bins
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert len(heights) == 10
    assert heights[0] > 1.5 and heights[-1] > 1.5 and heights[5] < 0.8


def test_reliability_diagram_ece(tmp_path):
    # every prediction at confidence 0.9, 60% right: ECE = 0.3
    n = 1000
    probs = np.tile([0.9, 0.05, 0.05], (n, 1))
    labels = np.where(np.arange(n) < 600, 0, 1)
    path = tmp_path / "rel.png"
    fig = reliability_diagram(probs, labels, title="abml", path=path)
    _check_png(path, fig)
    assert len(fig.axes) == 2
    assert "ECE = 0.300" in fig.axes[0].get_title()
    assert fig.axes[0].get_title().startswith("abml")


def test_reliability_diagram_binary_and_calibrated():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=20_000)
    labels = (rng.uniform(size=p.shape) < p).astype(int)
    fig = reliability_diagram(p, labels)
    ece = float(fig.axes[0].get_title().split("= ")[1].rstrip(")"))
    assert ece < 0.02


def test_metric_bars(tmp_path):
    rows = [
        {"method": m, "k": k, "nll": v + 0.1 * i, "oracle_nll": 0.5 - 0.1 * i}
        for i, k in enumerate((1, 5, 10))
        for m, v in (("abml", 0.9), ("maml", 1.4), ("reference", 0.6))
    ]
    path = tmp_path / "bars.png"
    fig = metric_bars(rows, metric="nll", group="k", path=path)
    _check_png(path, fig)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 9
    # one oracle tick per group, at the oracle values
    oracle = [c for c in ax.collections if c.get_label() == "oracle (exact Bayes)"]
    assert len(oracle) == 1
    segs = oracle[0].get_segments()
    assert len(segs) == 1
    all_ticks = [s for c in ax.collections for s in c.get_segments()]
    ys = sorted(round(float(s[0][1]), 6) for s in all_ticks)
    assert ys == pytest.approx([0.3, 0.4, 0.5])
    # bars of the same method share its palette colour
    assert {tuple(p.get_facecolor()) for p in ax.containers[0].patches} == {
        tuple(ax.containers[0].patches[0].get_facecolor())
    }


def test_learning_curves(tmp_path):
    n = list(range(1, 11))
    curves = {
        "random": {"n_labels": n, "mse": [1 / k for k in n], "mse_se": [0.05] * 10},
        "bald": {"n_labels": n, "mse": [0.7 / k for k in n], "mse_se": [0.04] * 10},
    }
    path = tmp_path / "al.png"
    fig = learning_curves(curves, metric="mse", path=path)
    _check_png(path, fig)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["random", "bald"]
    assert len(ax.collections) == 2  # one s.e. band each
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), curves["bald"]["mse"])


def test_training_curves_share_a_colour_per_method(tmp_path):
    curves = {
        "maml (seed 0)": {"method": "maml", "seconds": [1, 10, 100], "accuracy": [0.3, 0.6, 0.8]},
        "maml (seed 1)": {"method": "maml", "seconds": [1, 12, 90], "accuracy": [0.3, 0.5, 0.8]},
        "protonet (seed 0)": {"method": "protonet", "seconds": [1, 5], "accuracy": [0.7, 0.9]},
    }
    path = tmp_path / "lc.png"
    fig = training_curves(curves, "accuracy", path=path)
    _check_png(path, fig)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert ax.get_xscale() == "log" and len(lines) == 3
    assert lines[0].get_color() == lines[1].get_color() == method_color("maml")
    assert lines[0].get_linestyle() == "-" and lines[1].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["maml", "protonet"]
    np.testing.assert_allclose(lines[2].get_ydata(), [0.7, 0.9])


def test_palette_is_fixed():
    assert method_color("reference") == "#000000" == PALETTE["reference"]
    assert method_color("my-new-method") == method_color("my-new-method")


def test_hypothesis_samples_colours_by_shape(tmp_path):
    import jax

    from bayesmeta.inference import reference
    from bayesmeta.plots import hypothesis_samples
    from bayesmeta.tasks import make_task_set, sine_line
    from bayesmeta.tasks.base import padded_support

    fam = sine_line()
    ts = make_task_set(fam, jax.random.PRNGKey(1), 3, 1, 5)
    ref = reference(fam)
    sup = padded_support(ts, 1)
    rpost = ref.adapt(jax.random.PRNGKey(0), ref.init(None), sup, 1)
    path = tmp_path / "hyp.png"
    fig = hypothesis_samples({"reference": rpost}, rpost, sup.x, sup.y, sup.mask,
                                   task_indices=(0, 2), num_curves=20, path=path)  # fmt: skip
    assert path.exists() and path.stat().st_size > 10_000
    ax = fig.axes[0]
    colors = {line.get_color() for line in ax.get_lines()}
    assert colors <= {"#0072B2", "#D55E00"} and len(ax.get_lines()) == 20
    assert "ref" in ax.get_title()


def test_decision_boundaries_for_circles(tmp_path):
    import jax

    from bayesmeta.inference import reference
    from bayesmeta.plots import decision_boundaries
    from bayesmeta.tasks import circles, make_task_set
    from bayesmeta.tasks.base import padded_support

    fam = circles(grid_size=(16, 8))
    ts = make_task_set(fam, jax.random.PRNGKey(1), 2, 1, 5)
    ref = reference(fam)
    sup = padded_support(ts, 1)
    post = ref.adapt(jax.random.PRNGKey(0), ref.init(None), sup, 1)
    path = tmp_path / "circles.png"
    fig = decision_boundaries({"reference": post}, sup.x, sup.y, sup.mask, task_indices=(0, 1),
                              true_circles=ts["task_params"], path=path)  # fmt: skip
    assert path.exists() and path.stat().st_size > 10_000
    assert len(fig.axes[0].collections) >= 2  # boundary contours and the support point
    with pytest.raises(ValueError, match="categorical"):
        gauss = dataclasses.replace(post, likelihood="gaussian")
        decision_boundaries({"x": gauss}, sup.x, sup.y, sup.mask, task_indices=(0,))


def test_predictive_bands_of_a_models_own_likelihood(tmp_path):
    # A Student-t NumPyro model through EMAML (θ per member): bands from draws, curves from the
    # observation mean; task selection keeps each member's θ.
    import numpyro
    import numpyro.distributions as dist

    from bayesmeta.inference import emaml
    from bayesmeta.model import NumPyroModel
    from bayesmeta.tasks.base import Support

    def line_t(x, y=None, mask=None):
        t, n, _ = x.shape
        df = numpyro.sample("df", dist.Gamma(2.0, 0.1))
        with numpyro.plate("tasks", t, dim=-2):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
            b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            numpyro.sample("y", dist.StudentT(df, a + b * x[..., 0], 0.3), obs=y)

    method = emaml(NumPyroModel(line_t, dx=1), num_particles=3, inner_steps=2)
    state = method.init(jax.random.PRNGKey(0))
    x = jnp.linspace(-2, 2, 3)[None, :, None] * jnp.ones((5, 1, 1))
    y = 0.5 * x
    post = method.adapt(jax.random.PRNGKey(1), state, Support(x, y, jnp.ones((5, 3))), 3)
    assert post.likelihood == "generic" and post.params_per_sample
    fig = predictive_bands(
        {"emaml": post}, x, y, jnp.ones((5, 3)), task_indices=(0, 3), x_range=(-2, 2),
        num_draws=200, num_grid=20, path=tmp_path / "t.png",
    )  # fmt: skip
    assert (tmp_path / "t.png").stat().st_size > 0 and len(fig.axes) == 2


def test_learning_curves_give_every_curve_its_own_colour():
    # "beta" and "eps" hash to one fallback colour, and the palette gives "protonet" and
    # "random" the same grey: in one figure every curve still gets its own colour, the
    # palette's where it is free, else the next unused colour of the colour cycle.
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    n = [1, 2, 3]
    names = ["random", "beta", "eps", "protonet", "bald"]
    assert method_color("beta") == method_color("eps")
    assert method_color("random") == method_color("protonet")
    fig = learning_curves({k: {"n_labels": n, "mse": [1.0, 0.5, 0.2]} for k in names})
    colours = {ln.get_label(): ln.get_color() for ln in fig.axes[0].get_lines()}
    assert len(set(colours.values())) == len(names)
    assert colours["random"] == PALETTE["random"] and colours["bald"] == PALETTE["bald"]
    cycle = [to_hex(c).upper() for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]]
    taken = {PALETTE["random"], PALETTE["bald"]}
    free = [c for c in cycle if c not in taken]
    assert [colours[k].upper() for k in ("beta", "eps", "protonet")] == free[:3]
