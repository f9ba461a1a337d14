"""Typed method configs: construction, overrides, versioned round trips, migrations, and the
run directories that store them."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from bayesmeta.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from bayesmeta.cli import main
from bayesmeta.inference.abml import ABMLConfig
from bayesmeta.inference.bmaml import BMAMLConfig
from bayesmeta.inference.config import ConfigError, TrainConfig
from bayesmeta.inference.neural_process import NeuralProcessConfig
from bayesmeta.inference.registry import METHODS, method_config
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.recipes import manifest_config
from bayesmeta.runs import load_run
from bayesmeta.zoo import ModelSpec

NAMES = list(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_config_round_trips_through_json(name):
    cls = METHODS[name].config
    cfg = cls()
    assert cls.METHOD == name
    again = cls.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and type(again) is cls
    assert cfg.to_dict()["version"] == cls.VERSION
    # frozen: an override is a new object, the old one is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    new = dataclasses.replace(cfg, lr=5e-4)
    assert new.lr == 5e-4 and cfg.lr == cls().lr


@pytest.mark.parametrize("name", NAMES)
def test_a_misspelt_option_names_the_method_and_the_valid_ones(name):
    with pytest.raises(ConfigError, match=rf"{name}: unknown option\(s\) \['inner_stpes'\]"):
        method_config(name, inner_stpes=3)
    with pytest.raises(TypeError):  # the dataclass itself refuses it too
        METHODS[name].config(inner_stpes=3)


def test_bad_values_fail_at_construction_with_the_option_named():
    with pytest.raises(ConfigError, match="abml: outer: expected one of"):
        ABMLConfig(outer="elbo-ish")
    with pytest.raises(ConfigError, match="bmaml: num_particles: expected a positive integer"):
        BMAMLConfig(num_particles=0)
    with pytest.raises(ConfigError, match="noise_prior"):
        BMAMLConfig(noise_prior=(1.0, -1.0))
    with pytest.raises(ConfigError, match="lr: expected > 0"):
        NeuralProcessConfig(lr=0.0)
    with pytest.raises(ConfigError, match="'elbo' is not offered with head='collapsed'"):
        ABMLConfig(head="collapsed", outer="elbo")
    with pytest.raises(ConfigError, match="steps: expected an integer >= 0"):
        TrainConfig(steps=-1)


def test_version_one_options_are_migrated():
    old_bmaml = {"loss": "chaser", "prior_scale": 0.5, "num_particles": 3}
    cfg = BMAMLConfig.from_dict(old_bmaml)  # no version recorded: version 1
    assert (cfg.outer, cfg.init_prior_scale, cfg.num_particles) == ("chaser", 0.5, 3)
    cfg = NeuralProcessConfig.from_dict({"version": 1, "components": 2, "prior_scale": 0.3})
    assert (cfg.head_components, cfg.init_prior_scale) == (2, 0.3)
    assert ABMLConfig.from_dict({"head": "mean-field"}).head == "adapted"
    assert ABMLConfig.from_dict({"head": "collapsed"}).head == "collapsed"
    # a tuple option survives JSON (a list) and comes back a tuple
    cfg = NeuralProcessConfig.from_dict({"version": 2, "encoder_sizes": [32, 16]})
    assert cfg.encoder_sizes == (32, 16)


def test_a_newer_config_version_is_refused():
    with pytest.raises(ConfigError, match="written by a newer bayesmeta"):
        BMAMLConfig.from_dict({"version": BMAMLConfig.VERSION + 1})


def test_methods_carry_their_typed_config_and_options_override_it():
    spec = load_model_spec("sinusoid")
    m, train = spec.build("bmaml", inner_steps=2, meta_batch=4)
    assert isinstance(m.config, BMAMLConfig) and m.config.inner_steps == 2
    assert train["meta_batch"] == 4
    base = BMAMLConfig(num_particles=3)
    m2 = METHODS["bmaml"].factory(spec.model, base, inner_steps=1)
    assert (m2.config.num_particles, m2.config.inner_steps) == (3, 1)
    assert METHODS["meta-sgd"].factory(spec.model).config.meta_sgd


def test_a_recipe_typo_fails_when_the_spec_is_built():
    spec = load_model_spec("sinusoid")
    with pytest.raises(
        ValueError, match=r"recipes\['abml'\].*unknown option\(s\) \['inner_stpes'\]"
    ):
        ModelSpec(name="typo", family=spec.family, model=spec.model,
                  recipes={"abml": {"inner_stpes": 3}})  # fmt: skip
    with pytest.raises(ValueError, match="names the method 'ambl'"):
        ModelSpec(name="typo", family=spec.family, model=spec.model, recipes={"ambl": {}})
    with pytest.raises(ConfigError, match="unknown option"):
        spec.resolve("maml", num_particles=3)  # an override the method does not have


def test_a_run_saved_before_typed_configs_still_loads(tmp_path):
    # a checkpoint as written before method_config existed: old option names in `settings`
    spec = load_model_spec("sinusoid")
    old = spec.recipe("bmaml")  # the recipe as runs recorded it, under the old names
    old["loss"], old["prior_scale"] = old.pop("outer"), old.pop("init_prior_scale")
    method, _ = spec.build("bmaml")
    state = method.init(jax.random.PRNGKey(0))
    run = tmp_path / "old"
    run.mkdir()
    save_checkpoint(
        run / CHECKPOINT_NAME,
        {"model_source": "sinusoid", "model_sha256": None, "method": "bmaml", "settings": old,
         "state": state, "key": jax.random.PRNGKey(1), "step": 0},
    )  # fmt: skip
    _, loaded, restored, payload = load_run(str(run))
    assert loaded.config.outer == "predictive" and loaded.config.init_prior_scale == 1.0
    assert manifest_config(payload) == loaded.config
    np.testing.assert_array_equal(restored.theta["mu"], state.theta["mu"])


@pytest.mark.slow  # three CLI fits
def test_fit_writes_the_versioned_config_and_refuses_to_overwrite(tmp_path):
    run = tmp_path / "run"
    args = ["fit", "sinusoid", "--method", "maml", "--steps", "2", "--quiet", "--out", str(run)]
    assert main(args) == 0
    manifest = load_checkpoint(run / CHECKPOINT_NAME)
    assert manifest["method_config"]["version"] == METHODS["maml"].config.VERSION
    assert json.loads((run / "run.json").read_text())["method_config"]["inner_steps"] == 5
    # a second fit into the same directory is refused, and the old run is untouched
    stamp = (run / CHECKPOINT_NAME).stat().st_mtime_ns
    assert main([*args[:-2], "--seed", "1", "--out", str(run)]) == 2
    assert (run / CHECKPOINT_NAME).stat().st_mtime_ns == stamp
    assert main([*args, "--force", "--resume"]) == 2
    # --force replaces it, a stale best.npz included
    (run / "best.npz").write_bytes(b"stale")
    assert main([*args[:-2], "--seed", "1", "--force", "--out", str(run)]) == 0
    assert not (run / "best.npz").exists()
    assert json.loads((run / "run.json").read_text())["seed"] == 1
    # a bad argument with --force leaves the old run in place
    bad = ["fit", "no_such_model", "--method", "maml", "--force", "--out", str(run)]
    assert main(bad) == 2
    assert (run / CHECKPOINT_NAME).exists()
