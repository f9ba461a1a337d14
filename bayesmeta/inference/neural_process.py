"""Encoder-based amortized VI over the last layer (neural process / ML-PIP / VERSA).

The model's network f_φ is split into a body (every layer but the last, meta-learned and
shared by all tasks) and its last layer w, the low-dimensional task variable. A
permutation-invariant encoder reads a data set D = {(x_j, y_j)} and gives a Gaussian over w:

    r = (1/|D|) Σ_j g_ψ([x_j, y_j]),     q_ψ(w | D) = N(m_ψ(r), diag s_ψ(r)²)

(Garnelo et al. 2018; Gordon et al. 2019), with y one-hot for classification. The task
posterior for a support set is q_ψ(w | D_tr); each sample is a complete flat φ = (body, w_s),
so the shared model, TaskPosterior and every evaluator work unchanged. Meta-objectives per
task, with S samples w_s:

- ``outer="predictive"`` (default; ML-PIP, Gordon et al. 2019):
  −(1/|D_ts|) Σ_j log (1/S) Σ_s p(y_j | x_j, w_s),  w_s ~ q(w | D_tr);
- ``outer="elbo"`` (the neural process's conditional ELBO, Garnelo et al. 2018):
  −(1/|D_ts|) [E_{q(w | D_tr ∪ D_ts)} log p(D_ts | w) − KL(q(w | D_tr ∪ D_ts) ‖ q(w | D_tr))].

The likelihood (and its learned noise) is the shared model's ``log_likelihood_points``.

For a Gaussian likelihood the encoder can be exact (``encoder="conjugate"``, the default
there; ALPaCA, Harrison et al. 2018). With body features z(x) = [h(x), 1] and a learned prior
W ~ N(M₀, S₀) over the last layer (each output column, S₀ = L₀L₀ᵀ), the posterior given D is

    Λ = S₀⁻¹ + Σ_j z_j z_jᵀ / σ_y²,    M = Λ⁻¹ (S₀⁻¹ M₀ + Σ_j z_j y_jᵀ / σ_y²),

a sum-pooled, permutation-invariant function of the data (computed in the equivalent
covariance form, which never inverts S₀), and q(W | D) = N(M, Λ⁻¹) is the
exact posterior of the model's last layer, so the objectives are closed form:
``"predictive"`` is −(1/|D_ts|) Σ_j log N(y_j; z_jᵀM, σ_y² + z_jᵀΛ⁻¹z_j) (the S → ∞ limit of
the one above) and ``"elbo"``, whose q is exact, equals −(1/|D_ts|) log p(D_ts | D_tr), the
query set's joint Gaussian predictive. With ``head_components = C > 1`` the prior is a mixture
Σ_c π_c N(M₀_c, S₀_c) and the posterior, still exact, is the mixture of the components'
posteriors with weights ∝ π_c p_c(D): a task that two hypotheses explain equally well (a
sine or a line through one point) gets a multi-modal predictive, which one Gaussian over W
cannot express. Non-Gaussian likelihoods use a learned encoder.

For classification the learned encoder sees classes, not pixels (``encoder="per-class"``, the
default there; VERSA, Gordon et al. 2019): with the shared body's features h(x),

    r_c = (1/n_c) Σ_{j: y_j = c} g_ψ(h(x_j)),    q(w_c | D) = N(m_ψ(r_c), diag s_ψ(r_c)²),

one amortization network, shared by the classes, gives each class's column w_c of the last
layer (weights and bias) from the pooled embedding of that class's support points alone, so
the posterior is permutation-invariant within a class, equivariant across classes, and
handles any number of shots (masks) and classes. ``encoder="mlp"`` mean-pools g_ψ([x, y])
over raw inputs and one-hot labels (Garnelo et al. 2018).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax
from jax.flatten_util import ravel_pytree

from bayesmeta.inference.base import (
    MetaState,
    Method,
    checked_adapt,
    gradient_step,
    method_builder,
    model_dims,
)
from bayesmeta.inference.config import (
    ConfigError,
    MethodConfig,
    _rename,
    check_choice,
    check_positive,
    check_positive_int,
)
from bayesmeta.inference.heads import linear_gaussian, pathwise_draw
from bayesmeta.inference.objectives import expected_nll, kl_penalised, predictive_nll, task_mean
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, TaskBatch

Array = jax.Array

__all__ = ["ConjugatePosterior", "NeuralProcessConfig", "neural_process"]


class ConjugatePosterior(NamedTuple):
    """The conjugate encoder's exact posterior over the last layer, Σ_c w_c N(M_c, S_c).

    Attributes
    ----------
    log_weights : (C,) log posterior weights of the components.
    mean : (C, F + 1, Dy) posterior means M_c (the last row is the bias).
    cov : (C, F + 1, F + 1) posterior covariances S_c, shared by the output columns.
    """

    log_weights: jax.Array
    mean: jax.Array
    cov: jax.Array


OUTERS = ("predictive", "elbo")
ENCODERS = ("auto", "conjugate", "mlp", "per-class")
CLASSIFIER_ENCODERS = ("per-class", "mlp")


@dataclasses.dataclass(frozen=True)
class NeuralProcessConfig(MethodConfig):
    """Options of :func:`neural_process` (Adam's are
    :class:`~bayesmeta.inference.config.MethodConfig`'s).

    Attributes
    ----------
    encoder_sizes : sequence of int
        Hidden widths of the per-point encoder g_ψ (ReLU); the pooled representation feeds
        linear heads for m and log s.
    train_samples : int
        S, samples of w per task in meta-training.
    outer : {"predictive", "elbo"}
    encoder : {"auto", "conjugate", "mlp", "per-class"}
        ``"conjugate"``: the exact Gaussian posterior of the last layer (Gaussian likelihood
        only); ``"mlp"``: the learned encoder g_ψ mean-pooled over raw (x, y); ``"per-class"``:
        VERSA's encoder of each class's pooled body features (categorical likelihood only);
        ``"auto"``: conjugate where the likelihood is Gaussian, else ``classifier_encoder``.
    classifier_encoder : {"per-class", "mlp"}
        What ``"auto"`` picks for a categorical likelihood (``"mlp"`` in configs before
        version 3).
    init_prior_scale : float or None
        Initial standard deviation of the conjugate encoder's prior S₀ = L₀L₀ᵀ over the last
        layer (``prior_scale`` before config version 2); ``None`` keeps the model's own
        initial σ per weight of its last layer (a data model's, which starts at the training
        groups' empirical-Bayes fit).
    head_components : int
        C, Gaussian components of the conjugate encoder's mixture prior over W (with
        ``encoder="auto"`` and a non-Gaussian likelihood the learned encoder is used and C is
        ignored, so one recipe serves regression and classification models;
        ``components`` before config version 2).
    min_scale : float
        Floor added to s so that q never collapses to a point.
    """

    METHOD: ClassVar[str] = "neural-process"
    VERSION: ClassVar[int] = 3
    MIGRATIONS: ClassVar = {
        1: _rename({"components": "head_components", "prior_scale": "init_prior_scale"}),
        # version 2's "auto" encoder of a classifier was the raw-input pooled MLP
        2: lambda d: {"classifier_encoder": "mlp", **d},
    }

    encoder_sizes: tuple[int, ...] = (128, 128)
    train_samples: int = 16
    outer: str = "predictive"
    encoder: str = "auto"
    classifier_encoder: str = "per-class"
    init_prior_scale: float | None = 0.5
    head_components: int = 1
    min_scale: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "encoder_sizes", tuple(self.encoder_sizes))
        check_choice(self, "outer", OUTERS)
        check_choice(self, "encoder", ENCODERS)
        check_choice(self, "classifier_encoder", CLASSIFIER_ENCODERS)
        check_positive(self, "min_scale")
        if self.init_prior_scale is not None:
            check_positive(self, "init_prior_scale")
        check_positive_int(self, "head_components", "train_samples")
        if self.head_components > 1 and self.encoder == "mlp":
            raise ConfigError(
                "neural-process: head_components: a mixture prior needs encoder='conjugate' "
                "(or 'auto')"
            )


@method_builder(NeuralProcessConfig)
def neural_process(
    model: HierarchicalModel, cfg: NeuralProcessConfig, optimizer: optax.GradientTransformation
) -> Method:
    """Build the encoder-based amortized VI method. The model's network must be a list of
    layers (e.g. :func:`bayesmeta.nn.mlp`); the last one becomes the task variable w."""
    if cfg.encoder == "conjugate" and not model.likelihood.gaussian:
        raise ConfigError(
            f"neural-process: encoder: 'conjugate' needs a Gaussian likelihood, got "
            f"{model.likelihood!r}"
        )
    if cfg.encoder == "per-class" and not model.likelihood.classifier:
        raise ConfigError(
            f"neural-process: encoder: 'per-class' pools each class's support points and needs "
            f"a categorical likelihood, got {model.likelihood!r}"
        )
    params0 = model.network.init(jax.random.PRNGKey(0))
    if not isinstance(params0, list | tuple) or len(params0) < 2:
        raise ValueError("model: the neural process needs a network with at least two layers")
    last0 = params0[-1]
    flat_last0, unravel_last = ravel_pytree(last0)
    num_last = int(flat_last0.shape[0])
    num_body = model.num_params - num_last
    classify = model.likelihood.classifier
    kind = cfg.encoder
    if kind == "auto":
        kind = cfg.classifier_encoder if classify else "conjugate"
    conjugate, per_class = kind == "conjugate", kind == "per-class"
    linear_last = isinstance(last0, dict) and set(last0) == {"w", "b"} and jnp.ndim(last0["w"]) == 2
    if (conjugate or per_class) and not linear_last:
        raise ValueError(
            f"model: the {kind} encoder needs a linear last layer {{'w': (F, Dy), 'b': (Dy,)}}"
        )
    if linear_last:
        num_feat, dy = last0["w"].shape
        _, unravel_body = ravel_pytree(list(params0[:-1]))
        identity_head = {"w": jnp.eye(num_feat), "b": jnp.zeros(num_feat)}
    din = model.dx + (model.num_classes if classify else model.dy)
    enc = mlp((num_feat if per_class else din, *cfg.encoder_sizes), activation="relu")

    def init(key):
        k_net, k_enc, k_head = jax.random.split(key, 3)
        th = model.init_theta(k_net)
        theta = {"body": th["mu"][:num_body]}
        if conjugate:
            last = unravel_last(th["mu"][num_body:])
            m0 = jnp.concatenate([last["w"], last["b"][None]], 0)
            if cfg.init_prior_scale is None:  # the model's own σ of each row [W; bᵀ]
                ls = unravel_last(th["log_sigma"][num_body:])
                log_s0 = jnp.concatenate([ls["w"][:, 0], ls["b"][:1]]).astype(m0.dtype)
            else:
                log_s0 = jnp.full((num_feat + 1,), math.log(cfg.init_prior_scale), m0.dtype)
            # distinct component means break the symmetry between the components
            spread = jnp.exp(log_s0)[:, None] * jax.random.normal(
                k_head, (cfg.head_components, *m0.shape)
            )
            theta["prior_mean"] = m0 + spread.at[0].set(0.0)
            theta["prior_chol"] = jnp.broadcast_to(
                jnp.diag(log_s0), (cfg.head_components, num_feat + 1, num_feat + 1)
            )
            theta["prior_logits"] = jnp.zeros((cfg.head_components,))
        else:
            width = cfg.encoder_sizes[-1]
            out = num_feat + 1 if per_class else num_last  # one class's column, or all of w
            w_head = jax.random.normal(k_head, (width, 2 * out)) * (0.1 / math.sqrt(width))
            # Start q at the network initialisation's last layer with a moderate spread (the
            # per-class encoder at zero: its columns are exchangeable across classes).
            m_init = jnp.zeros(out) if per_class else th["mu"][num_body:]
            b_head = jnp.concatenate([m_init, jnp.full((out,), math.log(0.3))])
            theta["encoder"] = enc.init(k_enc)
            theta["head"] = {"w": w_head, "b": b_head}
        if "log_noise" in th:
            theta["log_noise"] = th["log_noise"]
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def model_theta(theta):
        return {"log_noise": theta["log_noise"]} if "log_noise" in theta else {}

    # -- the conjugate encoder: exact Gaussian posterior of the last layer --------------------
    def features(theta, x):
        """z(x) = [h(x), 1], ``(N, F + 1)``: the body's last hidden layer and a bias."""
        params = [*unravel_body(theta["body"]), identity_head]
        h = model.network.apply(params, x)
        return jnp.concatenate([h, jnp.ones((*h.shape[:-1], 1), h.dtype)], -1)

    def prior_factor(raw):
        """L₀ of one component, lower triangular with a positive (exp) diagonal: S₀ = L₀L₀ᵀ."""
        raw = jnp.tril(raw)
        return raw - jnp.diag(jnp.diag(raw)) + jnp.diag(jnp.exp(jnp.diag(raw)))

    def _components(theta, x, y, mask):
        """Masked Z and Y, the posterior log weights log w_c ∝ log π_c + log p_c(D), every
        component's L₀ and its exact posterior (:func:`~bayesmeta.inference.heads.
        linear_gaussian`, the covariance form shared with the collapsed heads), stacked over C.
        """
        z, ym = features(theta, x) * mask[:, None], y * mask[:, None]
        noise_var = model.noise_std(model_theta(theta)) ** 2

        def component(m0, chol_raw):
            l0 = prior_factor(chol_raw)
            return l0, linear_gaussian(z, ym, m0, l0 @ l0.T, noise_var)

        l0, post = jax.vmap(component)(theta["prior_mean"], theta["prior_chol"])
        log_w = jax.nn.log_softmax(theta["prior_logits"] + post.log_evidence)
        return z, ym, log_w, l0, post

    def conjugate_posterior(theta, x, y, mask) -> ConjugatePosterior:
        """The exact posterior of the last layer, Σ_c w_c N(M_c, S_c), w_c ∝ π_c p_c(D)."""
        _, _, log_w, _, post = _components(theta, x, y, mask)
        return ConjugatePosterior(log_w, post.mean, post.cov)

    def flat_last(w):
        """The ``(F + 1, Dy)`` matrix [W; bᵀ] as the network's flat last layer ``(L,)``."""
        return ravel_pytree({"w": w[:-1], "b": w[-1]})[0]

    def conjugate_predictive(theta, post: ConjugatePosterior, x):
        """Per-point predictive of each component: log weights ``(C,)``, means ``(C, N, Dy)``
        and variances ``(C, N, 1)``, noise included."""
        z = features(theta, x)
        var = jnp.maximum(jnp.einsum("nf,cfg,ng->cn", z, post.cov, z), 0.0)[..., None]
        noise_var = model.noise_std(model_theta(theta)) ** 2
        return post.log_weights, jnp.einsum("nf,cfd->cnd", z, post.mean), var + noise_var

    def conjugate_log_predictive(theta, post: ConjugatePosterior, x, y):
        """log p(y_n | x_n, D) per point ``(N,)``: logsumexp_c [log w_c + log N(y_n; ·)]."""
        log_w, mu, var = conjugate_predictive(theta, post, x)
        lp = -0.5 * jnp.sum((y - mu) ** 2 / var + jnp.log(2 * math.pi * var), -1)
        return jax.nn.logsumexp(log_w[:, None] + lp, 0)

    def conjugate_sample(key, theta, x, y, mask, num):
        """``num`` flat last layers from the posterior mixture, ``(num, L)``: a component
        c ~ Categorical(w), then pathwise conditioning W = W₀ + B A⁻¹ (Y − Z W₀ − ε) with
        W₀ ~ N(M₀_c, S₀_c), ε ~ N(0, σ_y² I): exact, and free of a square root of S."""
        z, ym, log_w, l0, post = _components(theta, x, y, mask)
        k_c, k_w = jax.random.split(key)
        comp = jax.random.categorical(k_c, log_w, shape=(num,))
        noise = model.noise_std(model_theta(theta))

        def one(c, k):
            kw, ke = jax.random.split(k)
            w0 = theta["prior_mean"][c] + l0[c] @ jax.random.normal(kw, (num_feat + 1, dy))
            eps = noise * jax.random.normal(ke, y.shape, z.dtype) * mask[:, None]
            post_c = jax.tree_util.tree_map(lambda a: a[c], post)
            return flat_last(pathwise_draw(post_c, z, ym, w0, eps))

        return jax.vmap(one)(comp, jax.random.split(k_w, num))

    def conjugate_task_loss(theta, key, x_s, y_s, m_s, x_q, y_q):
        del key
        post = conjugate_posterior(theta, x_s, y_s, m_s)
        if cfg.outer == "predictive":
            return -jnp.sum(conjugate_log_predictive(theta, post, x_q, y_q)) / x_q.shape[0]
        # q is exact, so the conditional ELBO is log p(D_ts | D_tr): per component and output
        # column, y_ts ~ N(Z_ts M_c, Z_ts S_c Z_tsᵀ + σ_y² I), mixed with the weights w_c.
        z = features(theta, x_q)
        noise_var = model.noise_std(model_theta(theta)) ** 2

        def joint(mean, cov):
            cov_q = z @ cov @ z.T + noise_var * jnp.eye(x_q.shape[0], dtype=z.dtype)
            dist_q = dist.MultivariateNormal(
                jnp.zeros(x_q.shape[0]), covariance_matrix=0.5 * (cov_q + cov_q.T)
            )
            return jnp.sum(jax.vmap(dist_q.log_prob, in_axes=1)(y_q - z @ mean))

        lp = jax.vmap(joint)(post.mean, post.cov)
        return -jax.nn.logsumexp(post.log_weights + lp) / x_q.shape[0]

    # -- the learned (mean-pooled MLP) encoders --------------------------------------------
    def encode_per_class(theta, x, y, mask):
        """VERSA: each class's column (w_c, b_c) of the last layer from that class's pooled
        body features; q(w | D) = N(m, s²) as flat last layers ``(L,)``."""
        e = jax.nn.relu(enc.apply(theta["encoder"], features(theta, x)[:, :-1]))
        onehot = jax.nn.one_hot(y, model.num_classes, dtype=e.dtype) * mask[:, None]
        r = onehot.T @ e / jnp.maximum(jnp.sum(onehot, 0), 1.0)[:, None]  # (C, W)
        out = r @ theta["head"]["w"] + theta["head"]["b"]  # (C, 2(F + 1))
        m, s = out[:, : num_feat + 1], jax.nn.softplus(out[:, num_feat + 1 :]) + cfg.min_scale
        return flat_last(m.T), flat_last(s.T)

    def encode(theta, x, y, mask):
        """q(w | D) = N(m, s²) of one data set ``x (N, Dx)``, ``y``, ``mask (N,)``."""
        if per_class:
            return encode_per_class(theta, x, y, mask)
        yin = jax.nn.one_hot(y, model.num_classes) if classify else y
        h = jax.nn.relu(enc.apply(theta["encoder"], jnp.concatenate([x, yin], -1)))
        r = jnp.sum(h * mask[:, None], 0) / jnp.maximum(jnp.sum(mask), 1.0)
        out = r @ theta["head"]["w"] + theta["head"]["b"]
        return out[:num_last], jax.nn.softplus(out[num_last:]) + cfg.min_scale

    def full_phi(theta, w):
        return jnp.concatenate([jnp.broadcast_to(theta["body"], (*w.shape[:-1], num_body)), w], -1)

    def log_lik_points(theta, w, x, y):
        return model.log_likelihood_points(model_theta(theta), full_phi(theta, w), x, y)

    def mlp_task_loss(theta, key, x_s, y_s, m_s, x_q, y_q):
        n_q = x_q.shape[0]
        m_c, s_c = encode(theta, x_s, y_s, m_s)
        eps = jax.random.normal(key, (cfg.train_samples, num_last))
        if cfg.outer == "predictive":
            ws = m_c + s_c * eps
            ll = jax.vmap(log_lik_points, in_axes=(None, 0, None, None))(theta, ws, x_q, y_q)
            return predictive_nll(ll)
        x_a = jnp.concatenate([x_s, x_q], 0)
        y_a = jnp.concatenate([y_s, y_q], 0)
        m_a = jnp.concatenate([m_s, jnp.ones(n_q, m_s.dtype)], 0)
        m_t, s_t = encode(theta, x_a, y_a, m_a)
        ws = m_t + s_t * eps
        ll = jax.vmap(log_lik_points, in_axes=(None, 0, None, None))(theta, ws, x_q, y_q)
        kl = dist.kl_divergence(
            dist.Normal(m_t, s_t).to_event(1), dist.Normal(m_c, s_c).to_event(1)
        )
        return kl_penalised(expected_nll(ll), kl, 1.0, n_q)

    task_loss = conjugate_task_loss if conjugate else mlp_task_loss

    def loss_fn(theta, key, batch: TaskBatch):
        return task_mean(task_loss, theta, batch, key)

    def sample_last(key, theta, x, y, mask, num):
        if conjugate:
            return conjugate_sample(key, theta, x, y, mask, num)
        m, s = encode(theta, x, y, mask)
        return m + s * jax.random.normal(key, (num, num_last), m.dtype)

    def adapt(key, state: MetaState, support: Support, num_samples: int = 32):
        theta = state.theta
        keys = jax.random.split(key, support.x.shape[0])
        ws = jax.vmap(sample_last, in_axes=(0, None, 0, 0, 0, None))(
            keys, theta, support.x, support.y, support.mask, num_samples
        )
        noise = model.noise_std(model_theta(theta))
        post = TaskPosterior.from_samples(
            full_phi(theta, ws), noise, model.apply, model.likelihood, "neural-process"
        )
        if not (conjugate and num_body == 0 and cfg.head_components == 1):
            return post
        # the last layer is all of φ (a linear model) and its posterior one Gaussian: carry
        # it, so that the predictive is the closed form, not a mixture of the draws
        jac = jax.jacfwd(flat_last)(jnp.zeros((num_feat + 1, dy), post.phi.dtype))

        def exact(x, y, mask):
            cp = conjugate_posterior(theta, x, y, mask)
            cov = jnp.einsum("pfd,fg,qgd->pq", jac, cp.cov[0], jac)
            return flat_last(cp.mean[0]), 0.5 * (cov + cov.T)

        mean, cov = jax.vmap(exact)(support.x, support.y, support.mask)
        return dataclasses.replace(post, gaussian=(mean, cov))

    def variational_params(state: MetaState, support: Support):
        """q(w | D_tr) per task: mean and marginal standard deviation, each ``(T, L)`` in the
        layout of the flat last layer."""
        if not conjugate:
            return jax.vmap(encode, in_axes=(None, 0, 0, 0))(
                state.theta, support.x, support.y, support.mask
            )

        def one(x, y, mask):
            post = conjugate_posterior(state.theta, x, y, mask)
            w = jnp.exp(post.log_weights)
            mean = jnp.einsum("c,cfd->fd", w, post.mean)
            var_c = jnp.diagonal(post.cov, axis1=1, axis2=2)[..., None] + post.mean**2
            sd = jnp.sqrt(jnp.maximum(jnp.einsum("c,cfd->fd", w, var_c) - mean**2, 0.0))
            return flat_last(mean), flat_last(sd)

        return jax.vmap(one)(support.x, support.y, support.mask)

    def query_loss(state: MetaState, batch: TaskBatch, key: Array | None = None) -> Array:
        """The meta-objective on ``batch`` (mean over tasks), as minimised in training."""
        return loss_fn(state.theta, jax.random.PRNGKey(0) if key is None else key, batch)

    extras = {"variational_params": variational_params, "query_loss": query_loss}
    if conjugate:
        extras["conjugate_posterior"] = lambda state, x, y, mask: conjugate_posterior(
            state.theta, x, y, mask
        )
        extras["conjugate_predictive"] = lambda state, post, x: conjugate_predictive(
            state.theta, post, x
        )
    return Method(
        "neural-process",
        init,
        gradient_step(loss_fn, optimizer),
        checked_adapt(adapt, **model_dims(model)),
        cfg,
        extras=extras,
    )
