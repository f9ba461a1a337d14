import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bayesmeta.inference import DivergenceError, maml, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import sample_batch, sinusoid


@pytest.fixture
def setup(key):
    model = HierarchicalModel(mlp((1, 16, 1)), noise_init=0.5)
    fam = sinusoid()
    sampler = lambda k: sample_batch(fam, k, 4, (1, 5), 5)[0]
    return model, sampler


def test_train_is_deterministic_and_checkpoints(setup, tmp_path, key):
    model, sampler = setup
    method = maml(model, inner_steps=1)
    r1 = train(
        method,
        method.init(key),
        sampler,
        key,
        40,
        chunk_size=10,
        run_dir=tmp_path,
        checkpoint_every=2,
        progress=False,
    )
    r2 = train(method, method.init(key), sampler, key, 40, chunk_size=10, progress=False)
    np.testing.assert_array_equal(r1.state.theta["mu"], r2.state.theta["mu"])
    assert int(r1.state.step) == 40
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz", template=method.init(key))
    assert ckpt["step"] == 40
    np.testing.assert_array_equal(ckpt["state"].theta["mu"], r1.state.theta["mu"])
    np.testing.assert_array_equal(ckpt["key"], r1.key)
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no temporary left behind


def test_chunks_compile_once(setup, key):
    model, _ = setup
    fam = sinusoid()
    traces = []

    def sampler(k):
        traces.append(1)
        return sample_batch(fam, k, 4, (1, 5), 5)[0]

    method = maml(model, inner_steps=1)
    train(method, method.init(key), sampler, key, 50, chunk_size=10, progress=False)
    assert len(traces) == 1  # one trace of the chunk, reused for all five chunks


def test_divergence_stops_with_message_and_keeps_last_good_checkpoint(setup, tmp_path, key):
    model, sampler = setup
    method = maml(model, inner_steps=1)
    good = train(
        method,
        method.init(key),
        sampler,
        key,
        20,
        chunk_size=10,
        run_dir=tmp_path,
        checkpoint_every=1,
        progress=False,
    )
    bad_state = good.state._replace(theta={**good.state.theta, "log_noise": jnp.asarray(jnp.nan)})
    with pytest.raises(DivergenceError, match="diverged.*last good checkpoint"):
        train(
            method,
            bad_state,
            sampler,
            key,
            20,
            chunk_size=10,
            run_dir=tmp_path,
            checkpoint_every=1,
            progress=False,
        )
    kept = load_checkpoint(tmp_path / "checkpoint.npz", template=method.init(key))
    assert kept["step"] == 20
    assert np.isfinite(kept["state"].theta["log_noise"])


def _diverging_after(method, step):
    """``method`` whose loss and θ turn NaN from meta-step ``step`` on."""

    def meta_step(k, state, batch):
        new, info = method.meta_step(k, state, batch)
        bad = new.step > step
        theta = {**new.theta, "log_noise": jnp.where(bad, jnp.nan, new.theta["log_noise"])}
        return new._replace(theta=theta), info._replace(loss=jnp.where(bad, jnp.nan, info.loss))

    return method._replace(meta_step=meta_step)


def test_on_divergence_stop_keeps_the_best_validated_state_and_says_where(setup, key):
    model, sampler = setup
    method = _diverging_after(maml(model, inner_steps=1), 25)
    scores = iter([3.0, 1.0, 2.0, 0.5])
    validate = lambda state: next(scores)
    with pytest.warns(RuntimeWarning, match="diverged.*near step 26.*best validated state "
                      r"\(step 20\)"):  # fmt: skip
        res = train(method, method.init(key), sampler, key, 60, chunk_size=10, progress=False,
                    validate=validate, on_divergence="stop")  # fmt: skip
    assert int(res.best_state.step) == 20 and int(res.state.step) == 20
    assert list(res.history["diverged_at"]) == [26]
    assert list(res.history["validation_nll"]) == [3.0, 1.0]
    assert np.isfinite(res.best_state.theta["log_noise"])
    # the default raises; so does "stop" with nothing validated to fall back on
    with pytest.raises(DivergenceError, match="near step 26"):
        train(method, method.init(key), sampler, key, 60, chunk_size=10, progress=False,
              validate=lambda state: 1.0)  # fmt: skip
    with pytest.raises(DivergenceError):
        train(method, method.init(key), sampler, key, 60, chunk_size=10, progress=False,
              on_divergence="stop")  # fmt: skip
    with pytest.raises(ValueError, match="on_divergence: expected 'raise' or 'stop', got 'x'"):
        train(method, method.init(key), sampler, key, 10, progress=False, on_divergence="x")


def test_checkpoint_corrupt_or_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no file"):
        load_checkpoint(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not an archive")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.npz")
    save_checkpoint(tmp_path / "ok.npz", {"state": {"a": jnp.ones(3)}, "note": "x"})
    ok = load_checkpoint(tmp_path / "ok.npz", template={"a": jnp.zeros(3)})
    np.testing.assert_array_equal(ok["state"]["a"], np.ones(3))
    assert ok["note"] == "x" and ok["format_version"] == 2


def test_bad_step_counts(setup, key):
    model, sampler = setup
    method = maml(model)
    with pytest.raises(ValueError, match="num_steps"):
        train(method, method.init(key), sampler, key, 0, progress=False)


def test_jitted_meta_step_with_max_seconds(setup, key):
    model, sampler = setup
    method = maml(model, inner_steps=1)
    res = train(
        method,
        method.init(key),
        sampler,
        key,
        10_000,
        chunk_size=10,
        max_seconds=0.0,
        progress=False,
    )
    assert int(res.state.step) == 10  # stops after the first chunk
    assert jax.numpy.isfinite(res.history["loss"][0])


def test_validation_keeps_the_best_state_and_checkpoint(setup, tmp_path, key):
    model, sampler = setup
    method = maml(model, inner_steps=1)
    scores = iter([3.0, 1.0, 2.0])
    seen = []

    def validate(state):
        seen.append(int(state.step))
        return next(scores)

    res = train(method, method.init(key), sampler, key, 30, chunk_size=10, run_dir=tmp_path,
                progress=False, validate=validate)  # fmt: skip
    assert seen == [10, 20, 30] and list(res.history["validation_nll"]) == [3.0, 1.0, 2.0]
    assert int(res.best_state.step) == 20 and int(res.state.step) == 30
    best = load_checkpoint(tmp_path / "best.npz", template=method.init(key))
    assert best["step"] == 20 and best["validation_nll"] == 1.0
    np.testing.assert_array_equal(best["state"].theta["mu"], res.best_state.theta["mu"])
    assert load_checkpoint(tmp_path / "checkpoint.npz")["step"] == 30


def test_validate_every_scores_every_nth_chunk_and_the_last(setup, key):
    # 5 chunks, every 2nd scored, plus the last: steps 20, 40, 50; the history names them
    model, sampler = setup
    method = maml(model, inner_steps=1)
    seen = []

    def validate(state):
        seen.append(int(state.step))
        return {20: 2.0, 40: 1.0, 50: 3.0}[seen[-1]]

    res = train(method, method.init(key), sampler, key, 50, chunk_size=10, progress=False,
                validate=validate, validate_every=2)  # fmt: skip
    assert seen == [20, 40, 50]
    assert list(res.history["validation_step"]) == [20, 40, 50]
    assert list(res.history["validation_nll"]) == [2.0, 1.0, 3.0]
    assert len(res.history["validation_seconds"]) == 3 and len(res.history["step"]) == 5
    assert int(res.best_state.step) == 40
    with pytest.raises(ValueError, match="validate_every: expected a positive integer, got 0"):
        train(method, method.init(key), sampler, key, 10, validate=validate, validate_every=0)


def test_a_resumed_run_keeps_its_best_state_unless_beaten(setup, tmp_path, key):
    # Resuming with the best score so far: a worse chunk does not replace best.npz.
    model, sampler = setup
    method = maml(model, inner_steps=1)
    save_checkpoint(tmp_path / "best.npz", {"state": method.init(key), "step": 0,
                                            "validation_nll": 0.5})  # fmt: skip
    scores = iter([1.0, 0.25])
    res = train(method, method.init(key), sampler, key, 20, chunk_size=10, run_dir=tmp_path,
                progress=False, validate=lambda s: next(scores), best_validation=0.5)  # fmt: skip
    assert int(res.best_state.step) == 20
    assert load_checkpoint(tmp_path / "best.npz")["validation_nll"] == 0.25
    # the checkpoint carries the run's history, so a resumed run can continue it
    hist = load_checkpoint(tmp_path / "checkpoint.npz")["history"]
    assert hist["step"] == [10, 20] and hist["validation_nll"] == [1.0, 0.25]


def test_validate_start_scores_the_starting_state_and_can_keep_it(setup, key, tmp_path):
    """A θ that starts at a closed-form fit may beat every trained state: with
    ``validate_start`` the start is scored (step 0) and kept, in memory and in best.npz;
    a resumed run (a history behind it) does not score its start again."""
    from bayesmeta.checkpoint import load_checkpoint

    model, sampler = setup
    method = maml(model, inner_steps=1)
    seen, scores = [], iter([0.5, 1.0, 2.0])

    def validate(state):
        seen.append(int(state.step))
        return next(scores)

    start = method.init(key)
    res = train(method, start, sampler, key, 20, chunk_size=10, progress=False,
                validate=validate, validate_start=True, run_dir=tmp_path)  # fmt: skip
    assert seen == [0, 10, 20] and list(res.history["validation_step"]) == [0, 10, 20]
    assert int(res.best_state.step) == 0 and int(res.state.step) == 20
    np.testing.assert_array_equal(res.best_state.theta["log_noise"], start.theta["log_noise"])
    assert load_checkpoint(tmp_path / "best.npz")["step"] == 0
    # the default leaves the start unscored; so does a resumed run
    seen.clear()
    scores = iter([1.0, 2.0])
    train(method, start, sampler, key, 20, chunk_size=10, progress=False, validate=validate)
    assert seen == [10, 20]
    seen.clear()
    scores = iter([1.0])
    train(method, start, sampler, key, 10, chunk_size=10, progress=False, validate=validate,
          validate_start=True, prior_history={"step": [10], "loss": [0.1]})  # fmt: skip
    assert seen == [10]


def test_start_margin_keeps_the_start_unless_a_state_beats_it_by_a_paired_se(setup, key):
    """The one-standard-error rule: a later state replaces the start only when its mean
    paired gain over the validation tasks exceeds ``start_margin_se`` standard errors; the
    kept state's step is ``best_step``, and the start's per-task scores stay in the history
    (a resumed run compares with them)."""
    model, sampler = setup
    method = maml(model, inner_steps=1)
    start_scores = np.array([1.0, 2.0, 3.0, 4.0])
    # step 10: lower on average (-0.05) but within noise (se 0.5); step 20: better on every
    # task (gain 0.3, se 0.0)
    per_step = {0: start_scores, 10: start_scores + np.array([-1.0, 1.0, -1.0, 0.8]),
                20: start_scores - 0.3}  # fmt: skip

    def validate(state):
        return float(validate.per_task(state).mean())

    validate.per_task = lambda state: per_step[int(state.step)]
    start = method.init(key)
    res = train(method, start, sampler, key, 10, chunk_size=10, progress=False,
                validate=validate, validate_start=True, start_margin_se=1.0)  # fmt: skip
    assert int(res.best_state.step) == 0 and list(res.history["best_step"]) == [0]
    assert res.history["validation_gain"][1] == pytest.approx(0.05)
    assert res.history["validation_gain_se"][1] == pytest.approx(
        np.std([-1.0, 1.0, -1.0, 0.8], ddof=1) / 2
    )
    # without the rule the lower mean wins
    res = train(method, start, sampler, key, 10, chunk_size=10, progress=False,
                validate=validate, validate_start=True)  # fmt: skip
    assert int(res.best_state.step) == 10
    # a clear gain replaces the start, also in a resumed run that reads the start's scores
    res = train(method, start, sampler, key, 20, chunk_size=10, progress=False,
                validate=validate, validate_start=True, start_margin_se=1.0)  # fmt: skip
    assert int(res.best_state.step) == 20 and list(res.history["best_step"]) == [20]
    np.testing.assert_array_equal(res.history["validation_start_per_task"], start_scores)
    mid = train(method, start, sampler, key, 10, chunk_size=10, progress=False,
                validate=validate, validate_start=True, start_margin_se=1.0)  # fmt: skip
    prior = {k: list(np.atleast_1d(v)) for k, v in mid.history.items()}
    res = train(method, mid.state, sampler, key, 10, chunk_size=10, progress=False,
                validate=validate, start_margin_se=1.0, prior_history=prior,
                best_validation=float(per_step[0].mean()))  # fmt: skip
    assert int(res.best_state.step) == 20 and res.history["validation_gain"][-1] == pytest.approx(
        0.3
    )
