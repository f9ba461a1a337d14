import sys

import jax
import numpy as np
import pytest

pytest.importorskip("PIL")

from bayesmeta.tasks import glyphs as glyphs_mod  # noqa: E402
from bayesmeta.tasks import sample_batch  # noqa: E402
from bayesmeta.tasks.glyphs import (  # noqa: E402
    SCRIPTS,
    TEST_SCRIPTS,
    glyph_settings,
    glyphs,
    load_glyphs,
    render_glyphs,
    settings_hash,
)

# A small rendering: two training and two test scripts, 8 instances per character.
SMALL = dict(scripts=("latin_upper", "greek_upper", "hebrew", "currency"), num_instances=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("glyph-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAYESMETA_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def data(cache):
    return load_glyphs("all", **SMALL)


def test_rendering_is_deterministic():
    settings = glyph_settings(("greek_lower",), num_instances=3)
    a, b = render_glyphs(settings), render_glyphs(settings)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()


def test_images_are_grey_nonblank_glyphs(data):
    assert data.images.dtype == np.uint8
    assert data.images.shape[1:] == (8, 28, 28)
    ink = data.images.reshape(data.num_classes, 8, -1).max(-1)
    assert ink.min() > 128  # every instance has ink
    # characters are classes: A–Z survive the filters and code points are unique
    latin = data.codepoint[data.script == data.script_names.index("latin_upper")]
    np.testing.assert_array_equal(latin, np.arange(ord("A"), ord("Z") + 1))
    assert len(np.unique(data.codepoint)) == data.num_classes
    # instances of one character differ (faces and distortions)
    assert len({im.tobytes() for im in data.images[0]}) == 8


def test_cache_hit_returns_identical_arrays(cache, data, monkeypatch):
    files = list(cache.glob("glyphs-*.npz"))
    settings = glyph_settings(SMALL["scripts"], num_instances=8)
    assert cache / f"glyphs-{settings_hash(settings)}.npz" in files
    assert not list(cache.glob("*.tmp"))

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again despite a cached file")

    monkeypatch.setattr(glyphs_mod, "render_glyphs", no_render)
    again = load_glyphs("all", **SMALL)
    assert again.images.tobytes() == data.images.tobytes()
    np.testing.assert_array_equal(again.codepoint, data.codepoint)
    np.testing.assert_array_equal(again.script, data.script)


def test_cache_key_depends_on_the_settings():
    base = glyph_settings(("latin_upper",))
    assert settings_hash(base) == settings_hash(glyph_settings(("latin_upper",)))
    for other in (
        glyph_settings(("latin_upper",), seed=1),
        glyph_settings(("latin_upper",), num_instances=10),
        glyph_settings(("latin_lower",)),
    ):
        assert settings_hash(other) != settings_hash(base)


def test_train_validation_and_test_share_no_class(data):
    train, val, test = data.subset("train"), data.subset("validation"), data.subset("test")
    assert set(train.scripts()) == {"latin_upper", "greek_upper"}
    assert set(test.scripts()) == set(val.scripts()) == {"hebrew", "currency"}
    for a, b in ((train, test), (train, val), (val, test)):
        assert not set(a.class_id) & set(b.class_id)
    assert train.num_classes + val.num_classes + test.num_classes == data.num_classes
    assert abs(val.num_classes - test.num_classes) <= 2  # the held-out classes halved
    # the fixed split of the full data set
    assert set(TEST_SCRIPTS) < set(SCRIPTS)
    ranges = {s: {c for lo, hi in SCRIPTS[s] for c in range(lo, hi + 1)} for s in SCRIPTS}
    seen: set[int] = set()
    for s in SCRIPTS:
        assert not ranges[s] & seen, f"{s} overlaps another script"
        seen |= ranges[s]


def _episode(fam, key, tasks=16, k_range=(1, 3), num_query=10):
    return sample_batch(fam, key, tasks, k_range, num_query)


def test_episode_shapes_masks_and_labels(cache, data, key):
    fam = glyphs(5, "train", **SMALL)
    assert (fam.dx, fam.num_classes, fam.likelihood) == (784, 5, "categorical")
    batch, params = jax.jit(lambda k: _episode(fam, k))(key)
    assert batch.x_support.shape == (16, 15, 784) and batch.x_query.shape == (16, 10, 784)
    assert batch.y_support.shape == (16, 15) and batch.y_query.shape == (16, 10)
    assert batch.y_support.dtype == np.int32 and batch.y_query.dtype == np.int32
    assert batch.mask_support.shape == (16, 15) and params.shape == (16, 5)
    x = np.asarray(batch.x_support)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    mask = np.asarray(batch.mask_support)
    # a prefix of N·k real points, k ∈ k_range, several k in a batch
    np.testing.assert_array_equal(np.sort(mask, axis=1)[:, ::-1], mask)
    shots = mask.sum(1) / 5
    assert set(shots) <= {1.0, 2.0, 3.0} and len(set(shots)) > 1
    # labels: shot by shot 0..N−1, so every real prefix is balanced; the query is balanced
    np.testing.assert_array_equal(batch.y_support, np.tile(np.arange(5), (16, 3)))
    for row in np.asarray(batch.y_query):
        np.testing.assert_array_equal(np.bincount(row, minlength=5), [2] * 5)
    # distinct classes per task, all from the training split
    p = np.asarray(params)
    assert all(len(set(row)) == 5 for row in p)
    train_ids = set(data.subset("train").class_id)
    assert set(p.ravel()) <= train_ids
    # labels are in random order: label 0 is not always the smallest class id
    assert len(set(np.argmin(p, 1))) > 1


def test_points_are_instances_of_their_labelled_class(cache, data, key):
    fam = glyphs(5, "test", **SMALL)
    batch, params = jax.jit(lambda k: _episode(fam, k, tasks=4, k_range=(3, 3), num_query=15))(key)
    flat = data.images.reshape(data.num_classes, data.num_instances, -1)
    for t in range(4):
        used: dict[int, set[int]] = {}
        for xs, ys in (
            (batch.x_support[t], batch.y_support[t]),
            (batch.x_query[t], batch.y_query[t]),
        ):
            for xi, yi in zip(np.asarray(xs), np.asarray(ys), strict=True):
                cls = int(params[t, yi])
                assert data.script_names[data.script[cls]] in ("hebrew", "currency")
                hits = np.flatnonzero(
                    np.all(np.rint(xi * 255).astype(np.uint8) == flat[cls], axis=1)
                )
                assert hits.size >= 1, "a point is not an instance of its labelled class"
                used.setdefault(cls, set()).add(int(hits[0]))
        # 3 support + 3 query instances per class, all distinct
        assert all(len(v) == 6 for v in used.values())


def test_jitted_sampler_equals_eager(cache, key):
    fam = glyphs(3, "test", **SMALL)
    eager = _episode(fam, key, tasks=4, num_query=6)
    jitted = jax.jit(lambda k: _episode(fam, k, tasks=4, num_query=6))(key)
    for a, b in zip(
        jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_family_from_given_data_and_sample_params(data, key):
    fam = glyphs(4, "train", data=data)
    ids = np.asarray(fam.sample_params(key, 8))
    assert ids.shape == (8, 4) and all(len(set(r)) == 4 for r in ids)
    assert set(ids.ravel()) <= set(data.subset("train").class_id)


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: glyphs(1, "train", **SMALL), "n_way"),
        (lambda: glyphs(2.0, "train", **SMALL), "n_way"),
        (lambda: glyphs(5, "valid", **SMALL), "split"),
        (lambda: glyphs(5, "train", scripts=("klingon",)), "scripts"),
        (lambda: glyphs(5, "train", num_instance=3), "load_kwargs"),
        (lambda: load_glyphs("val"), "split"),
    ],
)
def test_bad_family_arguments_raise(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


@pytest.mark.parametrize(
    "n_way, k_range, num_query, arg",
    [
        (5, (1, 3), 7, "num_query"),
        (5, (1, 3), 0, "num_query"),
        (5, (0, 3), 10, "k_range"),
        (5, (4, 3), 10, "k_range"),
        (5, (1, 7), 10, "k_range, num_query"),  # 7 + 2 > 8 instances
        (100, (1, 3), 100, "n_way"),  # more classes than the split has
    ],
)
def test_bad_episode_arguments_raise(cache, key, n_way, k_range, num_query, arg):
    fam = glyphs(n_way, "test", **SMALL)
    with pytest.raises(ValueError, match=arg):
        sample_batch(fam, key, 2, k_range, num_query)


def test_missing_pillow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"bayesmeta\[data\]"):
        render_glyphs(glyph_settings(("digits",), num_instances=2))


def test_no_exact_reference_for_glyphs():
    from bayesmeta.inference import reference

    with pytest.raises(ValueError, match="no exact reference"):
        reference(glyphs(5, "test"))


@pytest.mark.slow
def test_full_data_set(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESMETA_CACHE", str(tmp_path))
    full = load_glyphs("all")
    train, val, test = full.subset("train"), full.subset("validation"), full.subset("test")
    assert full.images.shape[1:] == (20, 28, 28)
    assert set(test.scripts()) == set(val.scripts()) == set(TEST_SCRIPTS)
    # the held-out scripts' classes, halved into validation and test by class-id parity
    assert train.num_classes > 1500 and 300 < test.num_classes + val.num_classes < 600
    assert abs(test.num_classes - val.num_classes) <= len(TEST_SCRIPTS)
    assert load_glyphs("test").images.tobytes() == test.images.tobytes()


def test_glyphs_model_builds_every_method_without_rendering(tmp_path, monkeypatch):
    from bayesmeta.modelfiles import load_model_spec
    from bayesmeta.zoo import METHOD_FACTORIES

    monkeypatch.setenv("BAYESMETA_CACHE", str(tmp_path))
    spec = load_model_spec("glyphs")
    assert spec.family.dx == spec.model.dx == 784 and spec.family.num_classes == 5
    assert spec.train_family.name == "glyphs5-train" and spec.family.name == "glyphs5-test"
    for name in METHOD_FACTORIES:
        method, cfg = spec.build(name)
        assert method.name == name and cfg["num_query"] % 5 == 0
    with pytest.raises(ValueError, match="no exact reference"):
        spec.build("reference")
    assert not list(tmp_path.iterdir())  # the data set is loaded on the first episode only


def test_k_power_is_refused_for_families_that_draw_their_own_episodes(cache, key):
    fam = glyphs(5, "test", **SMALL)
    with pytest.raises(ValueError, match=r"k_power: family .*\(sample_episode\)"):
        sample_batch(fam, key, 2, (1, 3), 2, 1.0)
