"""Few-shot glyph classification: an Omniglot-like data set rendered offline.

Glyphs are rendered with pillow from the TrueType fonts that matplotlib ships, so nothing is
downloaded:

- **scripts** (alphabets) are sets of Unicode code points (:data:`SCRIPTS`): Latin, Greek,
  Cyrillic, Armenian, Hebrew, Arabic, Georgian, Lao, Lisu, Canadian syllabics, and symbol
  blocks (arrows, mathematical operators, box drawing, currency, …);
- **characters are classes**. A character is kept when at least ``min_faces`` of the 16
  faces (:data:`FACES`: DejaVu Sans, Serif and Sans Mono and STIXGeneral, each regular, bold,
  oblique and bold-oblique) map it and render ink; combining marks, controls and spaces are
  skipped, and a character whose undistorted rendering is a near copy of an earlier one of
  its script (correlation above ``dedupe``) is dropped;
- **instances** are (face × random affine distortion): instance ``i`` of a character uses
  the ``i``-th face of a shuffled cycle over its faces, with a rotation, shear, scale, aspect
  change and shift drawn from a generator seeded by ``(seed, code point)``. Each glyph's ink
  box is fitted into a ``0.7·size`` square (aspect kept, as MNIST), distorted, and
  antialiased to ``size × size`` grey levels, ink bright on a dark ground.

Rendering is deterministic: the same settings and library versions give the same bytes. The
arrays are cached in ``$BAYESMETA_CACHE`` (default ``~/.cache/bayesmeta``) under a file name
that hashes every rendering setting and the pillow, FreeType, matplotlib and Unicode
versions; they are written atomically (a temporary file, then ``os.replace``).

Meta-training and meta-testing use disjoint scripts (:data:`TEST_SCRIPTS` are held out, as
Omniglot's evaluation alphabets); the held-out scripts' characters are split again, by the
parity of their class id, into a validation split (recipe choices, early stopping, fitted
temperatures) and a test split (published numbers), which share no class. :func:`glyphs` is
the task family: N-way K-shot episodes whose N classes are drawn from all the characters of
one split.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.tasks.base import TaskBatch, TaskFamily
from bayesmeta.tasks.families import episode_k_range

Array = jax.Array

#: Bump when the rendering code changes, so that old caches are not reused.
RENDER_VERSION = 1

#: Script name -> inclusive code-point ranges. Each code point belongs to one script.
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "latin_upper": ((0x0041, 0x005A),),
    "latin_lower": ((0x0061, 0x007A),),
    "digits": ((0x0030, 0x0039),),
    "ipa": ((0x0250, 0x02AF),),
    "greek_upper": ((0x0391, 0x03A9),),
    "greek_lower": ((0x03B1, 0x03C9),),
    "greek_archaic": ((0x03D0, 0x03FF),),
    "cyrillic_upper": ((0x0410, 0x042F),),
    "cyrillic_lower": ((0x0430, 0x044F),),
    "cyrillic_extra": ((0x0400, 0x040F), (0x0450, 0x045F)),
    "cyrillic_historic": ((0x0460, 0x0481),),
    "cyrillic_extended": ((0x048A, 0x04FF),),
    "armenian_upper": ((0x0531, 0x0556),),
    "armenian_lower": ((0x0561, 0x0587),),
    "hebrew": ((0x05D0, 0x05EA),),
    "arabic": ((0x0621, 0x064A),),
    "lao": ((0x0E81, 0x0EDF),),
    "georgian_mkhedruli": ((0x10D0, 0x10FA),),
    "georgian_asomtavruli": ((0x10A0, 0x10C5),),
    "canadian_syllabics": ((0x1401, 0x14FF),),
    "lisu": ((0xA4D0, 0xA4FF),),
    "yijing": ((0x4DC0, 0x4DFF),),
    "currency": ((0x20A0, 0x20CF),),
    "letterlike": ((0x2100, 0x214F),),
    "number_forms": ((0x2150, 0x218F),),
    "arrows": ((0x2190, 0x21FF),),
    "supplemental_arrows": ((0x27F0, 0x27FF), (0x2900, 0x297F)),
    "math_operators": ((0x2200, 0x22FF),),
    "math_misc": ((0x27C0, 0x27EF), (0x2980, 0x29FF)),
    "math_supplemental": ((0x2A00, 0x2AFF),),
    "technical": ((0x2300, 0x23FF),),
    "box_drawing": ((0x2500, 0x257F),),
    "geometric_shapes": ((0x25A0, 0x25FF),),
    "misc_symbols": ((0x2600, 0x26FF),),
    "dingbats": ((0x2700, 0x27BF),),
}

#: Scripts held out for meta-testing; every other script of :data:`SCRIPTS` is meta-training.
TEST_SCRIPTS: tuple[str, ...] = (
    "armenian_upper",
    "armenian_lower",
    "georgian_mkhedruli",
    "hebrew",
    "lao",
    "currency",
    "arrows",
    "geometric_shapes",
)

#: The font files (in ``matplotlib.get_data_path()/fonts/ttf``) that instances are drawn in.
FACES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)

SPLITS = ("train", "validation", "test", "all")
_LOAD_KEYS = (
    "scripts",
    "num_instances",
    "image_size",
    "min_faces",
    "dedupe",
    "seed",
    "cache",
    "verbose",
)

#: Distortion ranges: rotation (degrees), shear, scale, log aspect ratio, shift (pixels of a
#: 28-pixel image; scaled with ``image_size``).
DISTORTION = {
    "rotation": 15.0,
    "shear": 0.2,
    "scale": (0.8, 1.1),
    "log_aspect": 0.1,
    "shift": 2.0,
}

_FONT_PX = 48  # rendering size of the source glyphs
_SUPERSAMPLE = 2  # the distorted glyph is drawn at 2× and box-filtered down
_BOX = 0.7  # the undistorted ink box fills this fraction of the image


@dataclass(frozen=True)
class GlyphData:
    """Rendered glyphs of one split.

    Attributes
    ----------
    images : np.ndarray, (C, I, H, W) uint8
        Grey levels, 255 = ink; ``images / 255`` lies in [0, 1].
    script : np.ndarray, (C,) int32
        Index of each character's script in ``script_names``.
    codepoint : np.ndarray, (C,) int32
        Unicode code point of each class.
    class_id : np.ndarray, (C,) int32
        Row of each class in the full (``split="all"``) data set.
    script_names : tuple of str
        All scripts of the rendering, train and test.
    test_scripts : tuple of str
        The held-out scripts.
    split : {"train", "validation", "test", "all"}
    """

    images: np.ndarray
    script: np.ndarray
    codepoint: np.ndarray
    class_id: np.ndarray
    script_names: tuple[str, ...]
    test_scripts: tuple[str, ...]
    split: str

    @property
    def num_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    @property
    def chars(self) -> list[str]:
        """The characters (one per class)."""
        return [chr(int(c)) for c in self.codepoint]

    def scripts(self) -> tuple[str, ...]:
        """Names of the scripts present in this split."""
        return tuple(self.script_names[i] for i in np.unique(self.script))

    def subset(self, split: str) -> GlyphData:
        """The classes of ``split``: ``"train"`` (the training scripts), ``"validation"`` and
        ``"test"`` (the held-out scripts' characters with odd and even class ids: disjoint
        classes of the same unseen alphabets), or ``"all"``."""
        _check_split(split)
        if split == "all":
            keep = np.ones(self.num_classes, bool)
        else:
            test_ids = [i for i, s in enumerate(self.script_names) if s in self.test_scripts]
            held_out = np.isin(self.script, test_ids)
            odd = self.class_id % 2 == 1
            keep = {"train": ~held_out, "validation": held_out & odd,
                    "test": held_out & ~odd}[split]  # fmt: skip
        return GlyphData(
            images=self.images[keep],
            script=self.script[keep],
            codepoint=self.codepoint[keep],
            class_id=self.class_id[keep],
            script_names=self.script_names,
            test_scripts=self.test_scripts,
            split=split,
        )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _import_pil():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as err:
        raise ImportError(
            'rendering the glyph data set needs pillow: pip install "bayesmeta[data]"'
        ) from err
    return Image, ImageDraw, ImageFont


def glyph_settings(
    scripts: tuple[str, ...] | None = None,
    *,
    num_instances: int = 20,
    image_size: int = 28,
    min_faces: int = 4,
    dedupe: float = 0.97,
    seed: int = 0,
) -> dict:
    """The full, validated rendering settings (what the cache file name hashes)."""
    names = tuple(SCRIPTS) if scripts is None else tuple(scripts)
    unknown = [s for s in names if s not in SCRIPTS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"scripts: expected distinct names from {sorted(SCRIPTS)}, got {scripts!r}"
        )
    if not isinstance(num_instances, int) or num_instances < 2:
        raise ValueError(f"num_instances: expected an integer >= 2, got {num_instances!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size: expected an integer >= 8, got {image_size!r}")
    if not isinstance(min_faces, int) or not 1 <= min_faces <= len(FACES):
        raise ValueError(f"min_faces: expected an integer in [1, {len(FACES)}], got {min_faces!r}")
    if not 0.0 < dedupe <= 1.0:
        raise ValueError(f"dedupe: expected a correlation in (0, 1], got {dedupe!r}")
    return {
        "render_version": RENDER_VERSION,
        "scripts": {s: [list(r) for r in SCRIPTS[s]] for s in names},
        "test_scripts": [s for s in TEST_SCRIPTS if s in names],
        "faces": list(FACES),
        "num_instances": num_instances,
        "image_size": image_size,
        "min_faces": min_faces,
        "dedupe": float(dedupe),
        "seed": int(seed),
        "distortion": DISTORTION,
        "font_px": _FONT_PX,
        "supersample": _SUPERSAMPLE,
        "box": _BOX,
    }


def _versions() -> dict:
    import matplotlib

    try:
        import PIL
        from PIL import features

        pil, freetype = PIL.__version__, features.version("freetype2")
    except ImportError:  # the hash is only needed to find a cache; rendering checks again
        pil = freetype = None
    return {
        "pillow": pil,
        "freetype": freetype,
        "matplotlib": matplotlib.__version__,
        "unicode": unicodedata.unidata_version,
    }


def settings_hash(settings: dict) -> str:
    """A short hash of the rendering settings and the versions of the rendering libraries."""
    blob = json.dumps({**settings, "versions": _versions()}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir() -> Path:
    """``$BAYESMETA_CACHE``, or ``~/.cache/bayesmeta``."""
    return Path(os.environ.get("BAYESMETA_CACHE") or "~/.cache/bayesmeta").expanduser()


def _ink(image_mod, draw_mod, font, ch: str):
    """The ink of ``ch`` in ``font``, cropped to its bounding box; None if it renders blank."""
    left, top, right, bottom = font.getbbox(ch)
    if right <= left or bottom <= top:
        return None
    pad = 4
    img = image_mod.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    draw_mod.Draw(img).text((pad - left, pad - top), ch, font=font, fill=255)
    box = img.getbbox()
    return None if box is None else img.crop(box)


def _affine(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random linear maps (n, 2, 2) and shifts (n, 2) in 28-pixel units."""
    d = DISTORTION
    rot = np.deg2rad(rng.uniform(-d["rotation"], d["rotation"], n))
    shear = rng.uniform(-d["shear"], d["shear"], n)
    scale = rng.uniform(*d["scale"], n)
    aspect = np.exp(rng.uniform(-d["log_aspect"], d["log_aspect"], n))
    shift = rng.uniform(-d["shift"], d["shift"], (n, 2))
    c, s = np.cos(rot), np.sin(rot)
    r = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    sh = np.zeros((n, 2, 2))
    sh[:, 0, 0] = sh[:, 1, 1] = 1.0
    sh[:, 0, 1] = shear
    st = np.zeros((n, 2, 2))
    st[:, 0, 0] = scale * aspect
    st[:, 1, 1] = scale / aspect
    return r @ sh @ st, shift


def _place(image_mod, ink, lin: np.ndarray, shift: np.ndarray, size: int) -> np.ndarray:
    """Fit ``ink`` into the image's central box, apply ``lin`` and ``shift``; (size, size)."""
    ss = _SUPERSAMPLE
    w, h = ink.size
    big = size * ss
    fwd = (_BOX * big / max(w, h)) * lin  # source pixels -> output pixels
    inv = np.linalg.inv(fwd)
    centre = big / 2.0 + shift * (size / 28.0) * ss
    src_c = np.array([w / 2.0, h / 2.0])
    off = src_c - inv @ centre
    coeffs = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    out = ink.transform(
        (big, big), image_mod.AFFINE, tuple(float(v) for v in coeffs), resample=image_mod.BILINEAR
    )
    return np.asarray(out.reduce(ss), dtype=np.uint8)


def _renderable(ch: str) -> bool:
    # Letters, numbers, symbols and punctuation; no combining marks, controls or spaces.
    return unicodedata.category(ch)[0] in "LNSP"


def render_glyphs(settings: dict, verbose: bool = False) -> dict[str, np.ndarray]:
    """Render the data set for ``settings`` (from :func:`glyph_settings`); no caching.

    Returns the arrays stored in the cache: ``images (C, I, H, W) uint8``, ``script (C,)``,
    ``codepoint (C,)`` and ``faces (C, I)`` (the face index of each instance).
    """
    from matplotlib.ft2font import FT2Font

    image_mod, draw_mod, font_mod = _import_pil()
    folder = _font_dir()
    faces = settings["faces"]
    charmaps = [set(FT2Font(str(folder / f)).get_charmap()) for f in faces]
    fonts = [font_mod.truetype(str(folder / f), size=settings["font_px"]) for f in faces]
    n_inst, size = settings["num_instances"], settings["image_size"]
    min_faces, dedupe, seed = settings["min_faces"], settings["dedupe"], settings["seed"]
    identity = np.eye(2)
    images, script_ids, codepoints, face_ids = [], [], [], []
    t0 = time.perf_counter()
    for s_id, (name, ranges) in enumerate(settings["scripts"].items()):
        kept: list[np.ndarray] = []  # canonical images of the script's characters, normalised
        for lo, hi in ranges:
            for cp in range(lo, hi + 1):
                ch = chr(cp)
                if not _renderable(ch):
                    continue
                inks = []
                for f_id, (cmap, font) in enumerate(zip(charmaps, fonts, strict=True)):
                    if cp in cmap:
                        ink = _ink(image_mod, draw_mod, font, ch)
                        if ink is not None:
                            inks.append((f_id, ink))
                if len(inks) < min_faces:
                    continue
                canon = np.mean(
                    [_place(image_mod, ink, identity, np.zeros(2), size) for _, ink in inks], 0
                ).ravel()
                canon = canon - canon.mean()
                canon = canon / (np.linalg.norm(canon) + 1e-12)
                if kept and float(np.max(np.stack(kept) @ canon)) > dedupe:
                    continue
                kept.append(canon)
                rng = np.random.default_rng([seed, cp])
                order = rng.permutation(len(inks))
                lin, shift = _affine(rng, n_inst)
                which = [order[i % len(inks)] for i in range(n_inst)]
                images.append(
                    np.stack(
                        [
                            _place(image_mod, inks[j][1], lin[i], shift[i], size)
                            for i, j in enumerate(which)
                        ]
                    )
                )
                face_ids.append([inks[j][0] for j in which])
                script_ids.append(s_id)
                codepoints.append(cp)
        if verbose:
            print(f"{name}: {len(kept)} characters ({time.perf_counter() - t0:.1f} s)")
    if not images:
        raise ValueError("scripts: no character of these scripts is covered by enough faces")
    return {
        "images": np.stack(images),
        "script": np.asarray(script_ids, np.int32),
        "codepoint": np.asarray(codepoints, np.int32),
        "faces": np.asarray(face_ids, np.int8),
    }


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from bayesmeta.atomic import save_npz

    save_npz(path, arrays, compressed=True)


def load_glyphs(
    split: str = "all",
    *,
    scripts: tuple[str, ...] | None = None,
    num_instances: int = 20,
    image_size: int = 28,
    min_faces: int = 4,
    dedupe: float = 0.97,
    seed: int = 0,
    cache: bool = True,
    verbose: bool = False,
) -> GlyphData:
    """The glyph data set (one split), rendered on first use and cached on disk.

    Parameters
    ----------
    split : {"all", "train", "validation", "test"}
        ``"test"`` holds the characters of :data:`TEST_SCRIPTS`, ``"train"`` all others.
    scripts : tuple of str, optional
        Render only these scripts of :data:`SCRIPTS` (default: all); e.g. a small set for
        tests.
    num_instances : int
        Instances (face × distortion) per character.
    image_size : int
        Images are ``image_size × image_size``.
    min_faces : int
        Keep a character only if at least this many faces render it.
    dedupe : float
        Drop a character whose undistorted image correlates above this with an earlier
        character of its script.
    seed : int
        Seed of the distortions and face assignment.
    cache : bool
        Read and write ``$BAYESMETA_CACHE/glyphs-<hash>.npz``.
    verbose : bool
        Print progress while rendering.
    """
    _check_split(split)
    settings = glyph_settings(
        scripts,
        num_instances=num_instances,
        image_size=image_size,
        min_faces=min_faces,
        dedupe=dedupe,
        seed=seed,
    )
    path = cache_dir() / f"glyphs-{settings_hash(settings)}.npz"
    arrays = None
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError):  # a corrupt file: render again
            arrays = None
    if arrays is None:
        arrays = render_glyphs(settings, verbose=verbose)
        if cache:
            _write_atomic(path, arrays)
    data = GlyphData(
        images=arrays["images"],
        script=arrays["script"],
        codepoint=arrays["codepoint"],
        class_id=np.arange(arrays["images"].shape[0], dtype=np.int32),
        script_names=tuple(settings["scripts"]),
        test_scripts=tuple(settings["test_scripts"]),
        split="all",
    )
    return data.subset(split)


def episode_sampler(data: GlyphData, n_way: int):
    """A jittable ``sample_episode(key, num_tasks, k_range, num_query)`` over ``data``.

    Each task draws ``n_way`` distinct classes (label ``j`` is the ``j``-th draw, so labels
    are in random order), ``k`` shots per class for the support set (``k`` uniform on
    ``k_range`` per task) and ``num_query / n_way`` query instances per class, all distinct
    instances. The support set is ordered shot by shot (labels ``0..N−1``, then again), so
    its first ``n_way·k`` entries are real and the rest, up to ``n_way·k_max``, padding.
    Returns the batch and the tasks' class ids ``(T, n_way)`` (rows of the full data set).
    """
    n_cls, n_inst = data.num_classes, data.num_instances
    if n_way > n_cls:
        raise ValueError(
            f"n_way: expected at most the {n_cls} classes of the {data.split} split, got {n_way}"
        )
    dx = data.image_size**2
    images = None  # device copy, made on first use

    def sample_episode(key, num_tasks: int, k_range: tuple[int, int], num_query: int):
        nonlocal images
        k_min, k_max = episode_k_range(k_range, num_query, n_way)
        q_per = num_query // n_way
        if k_max + q_per > n_inst:
            raise ValueError(
                f"k_range, num_query: k_max + num_query / n_way = {k_max} + {q_per} instances "
                f"per class exceed the {n_inst} instances of each character"
            )
        if images is None:
            with jax.ensure_compile_time_eval():
                images = jnp.asarray(data.images.reshape(n_cls, n_inst, dx))
        class_ids = jnp.asarray(data.class_id)
        k_cls, k_inst, k_k = jax.random.split(key, 3)
        # N distinct classes per task, in random order: the top N of uniform scores.
        cls = jax.lax.top_k(jax.random.uniform(k_cls, (num_tasks, n_cls)), n_way)[1]
        # k_max + q_per distinct instances per class.
        inst = jax.lax.top_k(jax.random.uniform(k_inst, (num_tasks, n_way, n_inst)), k_max + q_per)[
            1
        ]
        x = images[cls[:, :, None], inst].astype(jnp.float32) / 255.0  # (T, N, k_max+q, D)
        # Shot-major order: point s·N + c is shot s of label c.
        x = jnp.swapaxes(x, 1, 2)  # (T, k_max + q, N, D)
        labels = jnp.broadcast_to(jnp.arange(n_way, dtype=jnp.int32), x.shape[:3])
        x_s = x[:, :k_max].reshape(num_tasks, k_max * n_way, dx)
        x_q = x[:, k_max:].reshape(num_tasks, q_per * n_way, dx)
        y_s = labels[:, :k_max].reshape(num_tasks, k_max * n_way)
        y_q = labels[:, k_max:].reshape(num_tasks, q_per * n_way)
        k = jax.random.randint(k_k, (num_tasks,), k_min, k_max + 1)
        mask = (jnp.arange(k_max * n_way)[None, :] < n_way * k[:, None]).astype(x.dtype)
        batch = TaskBatch(x_support=x_s, y_support=y_s, mask_support=mask, x_query=x_q, y_query=y_q)
        return batch, class_ids[cls]

    return sample_episode


def glyphs(
    n_way: int = 5,
    split: str = "train",
    *,
    data: GlyphData | None = None,
    **load_kwargs,
) -> TaskFamily:
    """N-way few-shot classification of glyphs, from one split.

    Parameters
    ----------
    n_way : int
        N, the classes per task (``num_classes`` of the family); at least 2.
    split : {"train", "validation", "test", "all"}
        Meta-train on ``"train"``, evaluate on ``"test"``: their scripts are disjoint.
    data : GlyphData, optional
        Use these glyphs (already split) instead of :func:`load_glyphs`.
    **load_kwargs
        Passed to :func:`load_glyphs` (``scripts``, ``num_instances``, ``seed``, …).

    Returns
    -------
    TaskFamily
        Categorical family with ``dx = image_size²`` (flattened images in [0, 1]),
        ``num_classes = n_way`` and a ``sample_episode`` hook; ``y`` are int32 labels
        ``(T, K)``, task parameters are the class ids ``(T, n_way)``. The data set is loaded
        (or rendered) on the first episode, so building the family is cheap. ``mean_fn`` and
        ``noise_fn`` are ``None``: no exact reference exists.
    """
    if isinstance(n_way, bool) or not isinstance(n_way, int | np.integer) or n_way < 2:
        raise ValueError(f"n_way: expected an integer >= 2, got {n_way!r}")
    n_way = int(n_way)
    _check_split(split)
    if data is not None and load_kwargs:
        raise ValueError(
            f"load_kwargs: expected none when data is given, got {sorted(load_kwargs)}"
        )
    if data is None:
        unknown = sorted(set(load_kwargs) - set(_LOAD_KEYS))
        if unknown:
            raise ValueError(
                f"load_kwargs: expected keywords of load_glyphs {list(_LOAD_KEYS)}, got {unknown}"
            )
        settings = glyph_settings(
            **{k: v for k, v in load_kwargs.items() if k not in ("cache", "verbose")}
        )
        size = settings["image_size"]
    else:
        size = data.image_size
    state: dict = {}

    def sampler():
        if "fn" not in state:
            d = data.subset(split) if data is not None else load_glyphs(split, **load_kwargs)
            state["fn"] = episode_sampler(d, n_way)
            state["data"] = d
        return state["fn"]

    def sample_episode(key, num_tasks, k_range, num_query):
        return sampler()(key, num_tasks, k_range, num_query)

    def class_ids():
        sampler()
        return state["data"].class_id

    return image_class_family(f"glyphs{n_way}-{split}", size, n_way, sample_episode, class_ids)


def image_class_family(name: str, image_size: int, n_way: int, sample_episode, class_ids):
    """The categorical :class:`TaskFamily` of N-way episodes over classes of square images
    (glyphs, digits): ``sample_episode`` draws the batches; ``class_ids()`` gives the split's
    class ids, of which the task parameters are ``n_way`` distinct ones."""

    def sample_params(key, n):
        ids = jnp.asarray(class_ids())
        pick = jax.lax.top_k(jax.random.uniform(key, (n, ids.shape[0])), n_way)[1]
        return ids[pick]

    return TaskFamily(
        name=name,
        dx=image_size * image_size,
        dy=1,
        sample_params=sample_params,
        mean_fn=None,
        noise_fn=None,
        x_range=(0.0, 1.0),
        likelihood="categorical",
        num_classes=n_way,
        sample_episode=sample_episode,
    )


__all__ = [
    "FACES",
    "SCRIPTS",
    "TEST_SCRIPTS",
    "GlyphData",
    "cache_dir",
    "episode_sampler",
    "glyph_settings",
    "glyphs",
    "load_glyphs",
    "render_glyphs",
    "settings_hash",
]
