"""Synthetic, hierarchical 32x32 image dataset for the offline demo.

THIS IS SYNTHETIC DATA, NOT CIFAR-100.  It exists so the whole Pool-of-Experts
pipeline (oracle training, primitive-task extraction, expert merging,
evaluation) can run end to end in minutes on a CPU with no download.  Any
accuracy obtained on it only shows that the pipeline works; it says nothing
about how the method performs on CIFAR-100 or any real data set.

Content: 8 primitive tasks (superclasses), each a visual *family* of object --
disks, blobs, stripes, checkers, triangles, crosses, rings, frames -- with 3
classes that differ only in the object's hue (30 degrees apart, with hue
jitter so neighbouring classes partly overlap), e.g. task "disks" holds
"red_disk", "orange_disk", "yellow_disk": 24 classes in all.  Every image has a
random position, size and rotation, a noisy tinted background, small
distractor shapes (some drawn on top of the object) and pixel noise.  A
WRN-16-1 trained for 8 epochs on the default 2,880 training images reaches
roughly 75-80% test accuracy; most of its errors confuse neighbouring hues
within a family, the rest confuse look-alike families (disk/blob, ring/frame,
triangle/cross, stripes/checkers).

Class ids are the indices of the alphabetically sorted class names (as in
CIFAR-100), so each superclass's classes are scattered over the label range.
"""
import numpy as np

SIZE = 32
# 12 named hues, 30 degrees apart; each family takes 3 consecutive ones.
HUES = {"red": 0, "orange": 30, "yellow": 60, "lime": 90, "green": 120,
        "teal": 150, "cyan": 180, "azure": 210, "blue": 240, "violet": 270,
        "purple": 300, "pink": 330}
# Neighbouring families on the hue wheel share colours.  A small CNN picks up
# colour and texture much faster than global outline, so families sharing 2
# hues differ in texture (filled vs striped/checkered/hollow) while families
# sharing only 1 hue have similar looks (disk/blob, stripes/checkers,
# triangle/cross, ring/frame): that is where cross-superclass errors come from.
FAMILIES = {  # task name -> (shape, its 3 colours)
    "disks": ("disk", ["red", "orange", "yellow"]),
    "blobs": ("blob", ["yellow", "lime", "green"]),
    "stripes": ("stripe", ["lime", "green", "teal"]),
    "checkers": ("checker", ["teal", "cyan", "azure"]),
    "triangles": ("triangle", ["cyan", "azure", "blue"]),
    "crosses": ("cross", ["blue", "violet", "purple"]),
    "rings": ("ring", ["violet", "purple", "pink"]),
    "frames": ("frame", ["pink", "red", "orange"]),
}
HUE_JITTER = 12.0  # degrees (std); tunes how much neighbouring hues overlap
N_DISTRACTORS = 3


def _class_table():
    """Sorted class names, each class's shape and hue, and the hierarchy."""
    entries = [(f"{c}_{shape}", task, shape, HUES[c])
               for task, (shape, cols) in FAMILIES.items() for c in cols]
    entries.sort()  # alphabetical ids interleave the superclasses
    names = [e[0] for e in entries]
    hierarchy = {t: sorted(i for i, e in enumerate(entries) if e[1] == t)
                 for t in FAMILIES}
    return names, [e[2] for e in entries], np.array([e[3] for e in entries],
                                                    float), hierarchy


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV->RGB; h in degrees, s/v in [0,1]; returns (..., 3)."""
    h = (np.asarray(h) % 360.0) / 60.0
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None]) % 6.0
    return v[..., None] - (v * s)[..., None] * np.clip(
        np.minimum(k, 4.0 - k), 0.0, 1.0)


def _shape_mask(shape, u, v):
    """Boolean mask of a shape in object-normalised coords (radius ~1)."""
    d = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if shape == "disk":
        return d < 1.0
    if shape == "frame":  # hollow square outline
        return (box > 0.5) & (box < 0.9)
    if shape == "triangle":  # equilateral, circumradius 1.1
        return (v > -0.55) & (v < 1.1 - np.sqrt(3.0) * np.abs(u))
    if shape == "ring":
        return (d > 0.65) & (d < 1.0)
    if shape == "cross":
        return ((np.abs(u) < 0.3) & (np.abs(v) < 1.0)) | \
               ((np.abs(v) < 0.3) & (np.abs(u) < 1.0))
    if shape == "stripe":  # square patch of ~3 parallel bars
        return (box < 0.9) & (np.sin(u * 3.0 * np.pi) > 0)
    if shape == "checker":  # square patch, 3x3 checkerboard
        cells = np.floor((u + 0.9) / 0.6) + np.floor((v + 0.9) / 0.6)
        return (box < 0.9) & (cells % 2 == 0)
    if shape == "blob":  # wobbly disk: 3 lobes, easy to mistake for a disk
        return d < 0.8 * (1.0 + 0.4 * np.sin(3.0 * np.arctan2(v, u)))
    raise ValueError(shape)


def _coords(rng, n, r_lo, r_hi):
    """Per-image rotated, radius-normalised pixel coordinates (n, 32, 32)."""
    f32 = lambda a: a.astype(np.float32)[..., None, None]  # noqa: E731 (speed)
    r = f32(rng.uniform(r_lo, r_hi, n))
    cx, cy = f32(rng.uniform(0.25, 0.75, (2, n)) * SIZE)
    th = f32(rng.uniform(0, 2 * np.pi, n))
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    dx, dy = xs - cx, ys - cy
    return ((dx * np.cos(th) + dy * np.sin(th)) / r,
            (-dx * np.sin(th) + dy * np.cos(th)) / r)


def _random_colour(rng, n, hue, s_lo=0.5, v_lo=0.6):
    return _hsv_to_rgb(hue, rng.uniform(s_lo, 1.0, n), rng.uniform(v_lo, 1.0, n))


def _distractors(rng, img):
    """Paint one small random-hue disk or square per image (clutter)."""
    n = len(img)
    u, v = _coords(rng, n, 1.5, 3.0)
    mask = np.where(rng.random(n)[:, None, None] < 0.5, np.hypot(u, v) < 1.0,
                    np.maximum(np.abs(u), np.abs(v)) < 0.8)
    col = _random_colour(rng, n, rng.uniform(0, 360, n))
    np.copyto(img, col[:, None, None, :], where=mask[..., None])


def _render(rng, labels, shapes, hues):
    n = len(labels)
    # Background: a dull random tint plus smooth low-frequency colour noise
    # (4x4 grid bilinearly upsampled) so the object must be found, not just
    # read off a constant canvas.
    base = _hsv_to_rgb(rng.uniform(0, 360, n), rng.uniform(0, 0.35, n),
                       rng.uniform(0.15, 0.6, n))
    t = (np.arange(SIZE) + 0.5) / SIZE * 3  # pixel position on the 4x4 grid
    i0 = np.floor(t).astype(int).clip(0, 2)
    up = np.zeros((SIZE, 4))  # bilinear interpolation weights 4 -> 32
    up[np.arange(SIZE), i0], up[np.arange(SIZE), i0 + 1] = 1 - (t - i0), t - i0
    low = rng.normal(0, 0.08, (n, 3, 4, 4))
    noise = (up @ low @ up.T).transpose(0, 2, 3, 1)  # (n, 32, 32, 3)
    img = (base[:, None, None, :] + noise).astype(np.float32)
    # Clutter under the object ...
    for _ in range(N_DISTRACTORS // 2):
        _distractors(rng, img)
    # ... the object itself (vectorised per shape family) ...
    u, v = _coords(rng, n, 9.0, 13.0)
    hue = hues[labels] + rng.normal(0, HUE_JITTER, n)
    col = _random_colour(rng, n, hue)
    shade = 1.0 + 0.15 * u.clip(-1, 1)  # mild lighting gradient across object
    obj_rgb = col[:, None, None, :] * shade[..., None]
    mask = np.zeros((n, SIZE, SIZE), bool)
    for shape in sorted(set(shapes)):
        idx = np.flatnonzero(np.isin(labels, [i for i, s in enumerate(shapes)
                                              if s == shape]))
        mask[idx] = _shape_mask(shape, u[idx], v[idx])
    np.copyto(img, obj_rgb, where=mask[..., None])
    # ... and clutter on top, which occasionally occludes part of it.
    for _ in range(N_DISTRACTORS - N_DISTRACTORS // 2):
        _distractors(rng, img)
    img += 0.05 * rng.standard_normal(img.shape, np.float32)  # sensor noise
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _split(rng, per_class, shapes, hues):
    labels = np.repeat(np.arange(len(shapes)), per_class)
    labels = labels[rng.permutation(len(labels))]  # shuffled, as in CIFAR
    return _render(rng, labels, shapes, hues), labels.astype(np.int64)


def make_demo(seed: int = 0, train_per_class: int = 120,
              test_per_class: int = 40) -> dict:
    """Build the demo dataset; the same seed gives byte-identical arrays.

    Returns train_x/test_x (uint8, N x 32 x 32 x 3, HWC), train_y/test_y
    (int64), class_names (index = class id) and hierarchy (task name ->
    sorted class ids).
    """
    names, shapes, hues, hierarchy = _class_table()
    # Separate streams so the test set does not depend on train_per_class.
    train_x, train_y = _split(np.random.default_rng([seed, 0]),
                              train_per_class, shapes, hues)
    test_x, test_y = _split(np.random.default_rng([seed, 1]),
                            test_per_class, shapes, hues)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x,
            "test_y": test_y, "class_names": names, "hierarchy": hierarchy}
