"""Real colour photos that ship with scikit-image and scikit-learn (no download), preprocessed
the ImageNet way, for the large-model converter tests (DESIGN.md section 6).

    photos()                      {name: uint8 RGB [H, W, 3]}: 10 photos
    center_crop(img, 224, 256)    shorter side resized to 256 (anti-aliased), centre 224x224
    random_crops(img, k, rng)     k random square crops (50-100 % of the shorter side), half of
                                  them mirrored, each resized to 224x224: calibration samples
    to_input(rgb)                 float [H, W, 3] on 0..255 -> float32 [3, H, W], (x - 127) / 128
                                  (EfficientNet-Lite's normalisation), canonical C strides

Every array handed to torch is a fresh C-ordered copy: a transposed numpy view turns into a
channels-last torch tensor, which changes what torch.onnx.export traces.
"""
from __future__ import annotations

import numpy as np

# skimage.data: the colour photos that are in the wheel itself (no pooch download);
# `cat` is the same picture as `chelsea`, so it is left out.
SKIMAGE_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field",
                  "immunohistochemistry", "retina")


def photos() -> dict:
    """{name: uint8 [H, W, 3]}: skimage's colour photos, the left view of its stereo
    motorcycle pair, and scikit-learn's two sample images (china.jpg, flower.jpg)."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    out = {name: np.asarray(getattr(data, name)())[:, :, :3] for name in SKIMAGE_PHOTOS}
    out["motorcycle"] = np.asarray(data.stereo_motorcycle()[0])
    sample = load_sample_images()
    for path, img in zip(sample.filenames, sample.images):
        out[path.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]] = np.asarray(img)
    return out


def _resize(img: np.ndarray, shape) -> np.ndarray:
    from skimage.transform import resize

    return resize(img.astype(np.float64), tuple(shape) + img.shape[2:], order=1, preserve_range=True,
                  anti_aliasing=True, mode="edge")


def center_crop(img: np.ndarray, size: int = 224, short: int = 256) -> np.ndarray:
    """float64 [size, size, 3] on 0..255: shorter side resized to `short`, then the centre."""
    h, w = img.shape[:2]
    f = short / min(h, w)
    r = _resize(img, (max(size, round(h * f)), max(size, round(w * f))))
    top, left = (r.shape[0] - size) // 2, (r.shape[1] - size) // 2
    return r[top:top + size, left:left + size]


def random_crops(img: np.ndarray, k: int, rng: np.random.Generator, size: int = 224) -> list:
    """k float64 [size, size, 3] crops on 0..255: random square windows of 50-100 % of the
    shorter side at random places, every other one mirrored left-right."""
    h, w = img.shape[:2]
    out = []
    for i in range(k):
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = img[top:top + side, left:left + side]
        if i % 2:
            crop = crop[:, ::-1]
        out.append(_resize(np.ascontiguousarray(crop), (size, size)))
    return out


def to_input(rgb: np.ndarray) -> np.ndarray:
    """float [H, W, 3] pixels on 0..255 -> float32 [3, H, W] normalised as (x - 127) / 128."""
    return np.array(((rgb - 127.0) / 128.0).transpose(2, 0, 1), dtype=np.float32, order="C")
