"""Calibration data: where the ~100 samples that calibrate a model come from.

iter_calibration(source, input_names, input_shapes, limit=100) yields samples, one model batch
each: {input name: float32 array of the model's input shape}. Accepted sources:

    an iterable      of arrays (one input), of dicts by input name (feed dicts), or of
                     tuples/lists of arrays in input order; each item holds one or more model
                     batches and is split into them
    an array         (one input) or a dict {input name: array}: samples along the first axis
    a .npy path      one input: an array whose first axis runs over the samples
    a .npz path      arrays named after the inputs (or one array, of any name, for one input)

Every array holds one or more model batches: either concatenated along the batch axis (the
input's rank, its first dimension a multiple of the model's batch) or stacked full feeds (one
more dimension than the input: [samples, *input shape]).
    a folder         of .jpg/.jpeg/.png/.bmp images (sorted by name), read with scikit-image
                     and preprocessed by ImagePreprocess (default: RGB scaled to [0, 1])

Anything that does not fit the model (shape, dtype, number of inputs, NaN or infinite values,
an empty source, an unreadable file) raises CalibrationDataError saying what was expected and
what was found. Float16/float64 data is converted to float32; integer data is refused (raw
uint8 pixels fed to a float model is a silent accuracy bug; scale them or use a folder with
ImagePreprocess). An integer input of the model (ids, masks: `dtypes`) takes integer data
that its type holds.

progress() wraps a loop in a tqdm bar on a terminal; split_holdout() keeps the first 80 % of
the samples for calibration and holds the rest back for the conversion report.
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CalibrationDataError, ConversionError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
LAYOUTS = ("NCHW", "NHWC")
# ITU-R BT.709 luma, the weights of skimage.color.rgb2gray
RGB_TO_GRAY = (0.2125, 0.7154, 0.0721)


def _fmt_shape(shape) -> str:
    dims = tuple(d if isinstance(d, str) else "?" if (d is None or not isinstance(d, (int, np.integer)) or d <= 0)
                 else int(d) for d in shape)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _dim(d):
    """A static positive dimension, or None for a dynamic one."""
    return int(d) if isinstance(d, (int, np.integer)) and d > 0 else None


# --------------------------------------------------------------------------- images


@dataclass
class ImagePreprocess:
    """How an image file becomes a model input (the stated preprocessing of a folder source).

    1. Read with skimage.io.imread; RGBA drops alpha; channel order RGB.
    2. Resize, aspect ratio kept, bilinear (anti-aliased when shrinking): so the image just
       covers `size` (resize=None), or so its shorter side is `resize` pixels (ImageNet style:
       resize=256, size=(224, 224)); then center-crop to size = (H, W). size=None takes H and
       W from the model's input shape.
    3. Channels: a grayscale image is repeated into RGB for a 3-channel model; an RGB image
       becomes luma (BT.709: 0.2125 R + 0.7154 G + 0.0721 B) for a 1-channel model.
    4. float32 (x * scale - mean) / std, mean and std scalars or one value per channel; scale
       applies to the raw pixel values (0..255 for 8-bit images).
    5. layout 'NCHW' (channels first, PyTorch/ONNX) or 'NHWC'.
    """
    size: tuple | None = None
    mean: float | tuple = 0.0
    std: float | tuple = 1.0
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    resize: int | None = None

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ConversionError(f"ImagePreprocess layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.size is not None:
            if len(self.size) != 2 or any(_dim(d) is None for d in self.size):
                raise ConversionError(f"ImagePreprocess size must be (H, W) with positive integers, got {self.size!r}")
            self.size = (int(self.size[0]), int(self.size[1]))
        if self.resize is not None and _dim(self.resize) is None:
            raise ConversionError(f"ImagePreprocess resize must be a positive integer, got {self.resize!r}")
        std = np.atleast_1d(np.asarray(self.std, np.float64))
        if not (np.isfinite(std).all() and (std != 0).all()):
            raise ConversionError(f"ImagePreprocess std must be finite and non-zero, got {self.std!r}")
        if not np.isfinite(np.atleast_1d(np.asarray(self.mean, np.float64))).all():
            raise ConversionError(f"ImagePreprocess mean must be finite, got {self.mean!r}")
        if not (np.isfinite(self.scale) and self.scale != 0):
            raise ConversionError(f"ImagePreprocess scale must be finite and non-zero, got {self.scale!r}")

    def _per_channel(self, value, channels: int, what: str) -> np.ndarray:
        v = np.atleast_1d(np.asarray(value, np.float64))
        if v.size == 1:
            return np.full(channels, v[0])
        if v.size != channels:
            raise CalibrationDataError(f"ImagePreprocess {what} has {v.size} values; the model's image input "
                                       f"has {channels} channel{'s' if channels != 1 else ''}")
        return v

    def apply(self, image: np.ndarray, channels: int = 3, size: tuple | None = None) -> np.ndarray:
        """One decoded image ([H, W] or [H, W, C]) -> float32 [C, H, W] ('NCHW') or [H, W, C]."""
        from skimage.transform import resize as sk_resize

        size = self.size or size
        if size is None:
            raise ConversionError("ImagePreprocess needs a size (H, W): the model's input shape has none")
        H, W = int(size[0]), int(size[1])
        img = np.asarray(image)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 3 and img.shape[2] in (2, 4):  # gray+alpha, RGBA: drop alpha
            img = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or min(img.shape[:2]) < 1:
            raise CalibrationDataError(f"expected a grayscale, RGB or RGBA image, found an array of shape {img.shape}")
        img = img.astype(np.float64)
        h, w = img.shape[:2]
        f = self.resize / min(h, w) if self.resize else max(H / h, W / w)
        nh, nw = max(H, round(h * f)), max(W, round(w * f))
        if (nh, nw) != (h, w):
            img = sk_resize(img, (nh, nw) + img.shape[2:], order=1, preserve_range=True,
                            anti_aliasing=f < 1, mode="edge")
        top, left = (nh - H) // 2, (nw - W) // 2
        img = img[top:top + H, left:left + W]
        if channels == 3 and img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        elif channels == 1 and img.ndim == 3:
            img = (img @ np.asarray(RGB_TO_GRAY))[:, :, None]
        elif channels == 1:
            img = img[:, :, None]
        elif channels != 3:
            raise CalibrationDataError(f"a folder of images feeds a model input of 1 or 3 channels; "
                                       f"this input has {channels}")
        mean = self._per_channel(self.mean, channels, "mean")
        std = self._per_channel(self.std, channels, "std")
        out = (img * self.scale - mean) / std
        if self.layout == "NCHW":
            out = out.transpose(2, 0, 1)
        return np.ascontiguousarray(out, dtype=np.float32)


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _iter_images(folder: Path, input_names, shapes, preprocess):
    if len(input_names) != 1:
        raise CalibrationDataError(f"a folder of images feeds a model with one input; this model has "
                                   f"{len(input_names)}: {list(input_names)} (pass an .npz or dicts instead)")
    try:
        from skimage import io as skio
    except ImportError:
        raise CalibrationDataError("reading a folder of calibration images needs the package "
                                   "scikit-image (pip install scikit-image), or pass the images as "
                                   "an .npy/.npz file or arrays") from None
    name, shape = input_names[0], shapes[0]
    pre = preprocess if preprocess is not None else ImagePreprocess()
    if not isinstance(pre, ImagePreprocess):
        raise ConversionError(f"preprocess must be a qrt.converters.data.ImagePreprocess, got {type(pre).__name__}")
    if shape is None or len(shape) != 4:
        raise CalibrationDataError(f"a folder of images feeds a 4-D image input; input '{name}' has shape "
                                   f"{_fmt_shape(shape or ())}")
    b, c, h, w = (shape[0], shape[1], shape[2], shape[3]) if pre.layout == "NCHW" else \
        (shape[0], shape[3], shape[1], shape[2])
    c, h, w, b = _dim(c), _dim(h), _dim(w), _dim(b) or 1
    if c not in (1, 3):
        raise CalibrationDataError(f"a folder of images feeds an input of 1 or 3 channels; input '{name}' has "
                                   f"shape {_fmt_shape(shape)}, {c} channels in layout {pre.layout} "
                                   "(is ImagePreprocess.layout right?)")
    if pre.size is not None and h and w and tuple(pre.size) != (h, w):
        raise CalibrationDataError(f"ImagePreprocess size {tuple(pre.size)} differs from input '{name}' "
                                   f"of shape {_fmt_shape(shape)}, which takes {h}x{w} images")
    size = pre.size or ((h, w) if h and w else None)
    files = _image_files(folder)
    if len(files) < b:
        raise CalibrationDataError(f"no calibration images in {folder}: expected at least {b} file(s) ending in "
                                   f"{', '.join(IMAGE_EXTENSIONS)}, found {len(files)}")
    batch = []
    for path in files:
        try:
            with warnings.catch_warnings():  # imageio's plugin probing warns on unreadable files
                warnings.simplefilter("ignore")
                img = skio.imread(str(path))
        except Exception as e:  # noqa: BLE001 - any decoder failure is a data problem
            raise CalibrationDataError(f"cannot read calibration image {path}: {e}") from None
        try:
            batch.append(pre.apply(img, c, size))
        except CalibrationDataError as e:
            raise CalibrationDataError(f"calibration image {path}: {e}") from None
        if len(batch) == b:
            yield {name: np.stack(batch)}
            batch = []


# --------------------------------------------------------------------------- arrays


class _Checker:
    """Checks one input's arrays against the model and splits them into model batches."""

    def __init__(self, name: str, shape, dtype=None):
        self.name = name
        self.dtype = dtype  # an integer input's (ids, masks); None: float32
        self.shape = tuple(shape) if shape is not None else None
        self.batch = _dim(self.shape[0]) if self.shape else None

    def _fits(self, dims, start: int) -> bool:
        """dims match the input's shape from dimension `start` on (free dimensions match any)."""
        return len(dims) == len(self.shape) and all(
            _dim(d) is None or dims[k] == d for k, d in enumerate(self.shape) if k >= start)

    def split(self, value, where: str) -> list:
        """value -> list of float32 arrays (an integer input's own dtype) of the model's input
        shape; `where` names the sample in messages ("calibration sample 3", "row block 2 of x.npy")."""
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
            value = value.detach().cpu().numpy()
        a = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise CalibrationDataError(f"{where} for input '{self.name}' is not a numeric array "
                                       f"(found {type(value).__name__} of dtype {a.dtype}); the model expects float32")
        if self.dtype is not None:  # an integer input: integers that its type holds
            if a.dtype.kind not in "iub":
                raise CalibrationDataError(f"{where} for input '{self.name}' has dtype {a.dtype}; the model expects "
                                           f"integers ({self.dtype.name}: ids, masks)")
            lim = np.iinfo(self.dtype)
            if a.size and (a.min() < lim.min or a.max() > lim.max):
                raise CalibrationDataError(f"{where} for input '{self.name}' holds values beyond {self.dtype.name}")
        elif not np.issubdtype(a.dtype, np.floating):
            raise CalibrationDataError(
                f"{where} for input '{self.name}' has dtype {a.dtype}; the model expects float32 (convert "
                "and scale it first, e.g. x.astype(np.float32) / 255 for 8-bit pixels, or use a folder "
                "of images with ImagePreprocess)")
        shape = self.shape
        if shape is not None:
            if a.ndim == len(shape) + 1 and self._fits(a.shape[1:], 0):  # stacked full feeds
                a = a.reshape((-1,) + tuple(a.shape[2:]))
            fits = a.ndim == len(shape) and self._fits(a.shape, 1)
            if not fits:
                raise CalibrationDataError(f"{where} for input '{self.name}' has shape {tuple(int(d) for d in a.shape)}; "
                                           f"the model expects {_fmt_shape(shape)}")
        if a.ndim == 0 or a.shape[0] == 0:
            raise CalibrationDataError(f"{where} for input '{self.name}' is empty (shape {tuple(int(d) for d in a.shape)}); "
                                       f"the model expects {_fmt_shape(shape or ())}")
        b = self.batch
        if b is not None and a.shape[0] % b:
            raise CalibrationDataError(f"{where} for input '{self.name}' has {a.shape[0]} rows along the batch "
                                       f"dimension (shape {tuple(int(d) for d in a.shape)}); the model takes batches of {b}: "
                                       f"pass a multiple of {b}")
        a = np.asarray(a, dtype=self.dtype or np.float32)
        if self.dtype is None and not np.isfinite(a).all():
            nan = int(np.isnan(a).sum())
            inf = int(np.isinf(a).sum())
            what = " and ".join(s for s in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if s)
            raise CalibrationDataError(f"{where} for input '{self.name}' holds {what} value"
                                       f"{'s' if nan + inf > 1 else ''} (of {a.size}); calibration data must be finite")
        if b is None or a.shape[0] == b:
            return [a]
        return [a[k:k + b] for k in range(0, a.shape[0], b)]


def _zip_inputs(checkers, values: list, where: str) -> list:
    parts = [ck.split(v, where) for ck, v in zip(checkers, values)]
    counts = {len(p) for p in parts}
    if len(counts) != 1:
        found = ", ".join(f"'{ck.name}': {len(p)}" for ck, p in zip(checkers, parts))
        raise CalibrationDataError(f"{where} holds different numbers of model batches per input ({found}); "
                                   "every input must have the same number of samples")
    return [{ck.name: p[k] for ck, p in zip(checkers, parts)} for k in range(counts.pop())]


def _from_mapping(mapping: Mapping, checkers, where: str, any_key: bool = False) -> list:
    names = [ck.name for ck in checkers]
    keys = list(mapping.keys())
    if any_key and len(names) == 1 and len(keys) == 1 and keys[0] not in names:
        return _zip_inputs(checkers, [mapping[keys[0]]], where)  # an .npz for one input: any name
    missing = [n for n in names if n not in mapping]
    extra = [k for k in keys if k not in names]
    if missing or extra:
        raise CalibrationDataError(f"{where} has inputs {keys}; the model expects {names}"
                                   + (f" (missing {missing})" if missing else "")
                                   + (f" (unknown {extra})" if extra else ""))
    return _zip_inputs(checkers, [mapping[n] for n in names], where)


def _from_item(item, checkers, index: int) -> list:
    where = f"calibration sample {index}"
    names = [ck.name for ck in checkers]
    if isinstance(item, Mapping):
        return _from_mapping(item, checkers, where)
    if isinstance(item, (tuple, list)):
        if len(item) != len(names):
            hint = (" (if the items are (inputs, label) pairs, pass (x for x, _ in data))"
                    if len(names) == 1 and len(item) == 2 else "")
            raise CalibrationDataError(f"{where} has {len(item)} arrays; the model has {len(names)} "
                                       f"input{'s' if len(names) != 1 else ''} {names}{hint}")
        return _zip_inputs(checkers, list(item), where)
    if len(names) != 1:
        raise CalibrationDataError(f"{where} is a single array; the model has {len(names)} inputs {names}: "
                                   "pass a dict by input name or a tuple in input order")
    return _zip_inputs(checkers, [item], where)


def _load_file(path: Path, checkers) -> Iterable:
    names = [ck.name for ck in checkers]
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        else:
            raise CalibrationDataError(f"calibration source {path}: unsupported file type '{path.suffix}'; "
                                       f"expected .npy, .npz or a folder of images")
    except CalibrationDataError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or pickled file
        raise CalibrationDataError(f"cannot read calibration file {path}: {e}") from None
    if isinstance(data, dict):
        if not data:
            raise CalibrationDataError(f"calibration file {path} holds no arrays; expected arrays named {names}")
        yield from _from_mapping(data, checkers, f"calibration file {path}", any_key=True)
        return
    if len(names) != 1:
        raise CalibrationDataError(f"calibration file {path} is one array; the model has {len(names)} inputs "
                                   f"{names}: use an .npz with arrays named after the inputs")
    yield from _split_rows(data, checkers[0], f"calibration file {path}")


def _split_rows(array, checker: _Checker, where: str):
    """Samples along the first axis of one big array, checked block by block (an mmap'd .npy
    is never read whole)."""
    a = array
    shape = checker.shape
    if shape is not None and a.ndim == len(shape) + 1 and checker._fits(a.shape[1:], 0):  # stacked feeds
        for i in range(a.shape[0]):
            for part in checker.split(np.asarray(a[i]), f"{where}, feed {i},"):
                yield {checker.name: part}
        return
    if shape is not None and (a.ndim != len(shape) or any(
            _dim(d) is not None and a.shape[k] != d for k, d in enumerate(shape) if k > 0)):
        raise CalibrationDataError(f"{where} for input '{checker.name}' has shape {tuple(int(d) for d in a.shape)}; "
                                   f"the model expects {_fmt_shape(shape)} per sample, so an array of "
                                   f"shape {_fmt_shape(('N',) + tuple(shape[1:]))}")
    if a.ndim == 0 or a.shape[0] == 0:
        raise CalibrationDataError(f"{where} for input '{checker.name}' holds no samples "
                                   f"(shape {tuple(int(d) for d in a.shape)})")
    b = checker.batch or 1
    if a.shape[0] % b:
        raise CalibrationDataError(f"{where} for input '{checker.name}' has {a.shape[0]} rows; the model "
                                   f"takes batches of {b}: pass a multiple of {b}")
    for k in range(0, a.shape[0], b):
        for part in checker.split(np.asarray(a[k:k + b]), f"{where}, sample {k // b},"):
            yield {checker.name: part}


def iter_calibration(source, input_names, input_shapes, limit: int | None = 100, preprocess=None,
                     as_dict: bool = True, dtypes: dict | None = None):
    """Yield up to `limit` calibration samples, each one model batch: {input name: float32
    array of the input's shape} (or the bare array for a one-input model when as_dict=False).

    input_names: the model's input names, in order; input_shapes: their shapes, a dict by name
    or a sequence in the same order (a dimension that is None or <= 0 is free). preprocess: an
    ImagePreprocess for a folder of images. Raises CalibrationDataError on data that does not
    fit (see the module docstring)."""
    names = [str(n) for n in input_names]
    if not names:
        raise CalibrationDataError("the model has no inputs to calibrate")
    if isinstance(input_shapes, Mapping):
        missing = [n for n in names if n not in input_shapes]
        if missing:
            raise ConversionError(f"input_shapes has no shape for input(s) {missing}")
        shapes = [input_shapes[n] for n in names]
    else:
        shapes = list(input_shapes)
        if len(shapes) != len(names):
            raise ConversionError(f"{len(shapes)} input shapes for {len(names)} inputs {names}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise ConversionError(f"limit must be a positive number of samples or None, got {limit!r}")
    checkers = [_Checker(n, s, (dtypes or {}).get(n)) for n, s in zip(names, shapes)]

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise CalibrationDataError(f"calibration source {path}: no such file or folder")
        samples = _iter_images(path, names, shapes, preprocess) if path.is_dir() else _load_file(path, checkers)
        label = str(path)
    elif isinstance(source, np.ndarray):
        if len(names) != 1:
            raise CalibrationDataError(f"an array of calibration data covers one input; the model has "
                                       f"{len(names)} inputs {names}: pass a dict by input name")
        samples = _split_rows(source, checkers[0], "calibration array")
        label = "the calibration array"
    elif isinstance(source, Mapping):
        samples = _from_mapping(source, checkers, "calibration data")
        label = "the calibration dict"
    elif isinstance(source, Iterable):
        samples = (s for i, item in enumerate(source) for s in _from_item(item, checkers, i))
        label = f"the calibration {type(source).__name__}"
    else:
        raise CalibrationDataError(f"calibration source of type {type(source).__name__} is not supported; "
                                   "expected arrays, an iterable of arrays or dicts, a .npy/.npz path or a "
                                   "folder of images")
    count = 0
    for sample in samples:
        if limit is not None and count >= limit:
            break
        count += 1
        yield sample if (as_dict or len(names) != 1) else sample[names[0]]
    if count == 0:
        raise CalibrationDataError(f"{label} yielded no calibration samples; the model expects at least one "
                                   f"for input{'s' if len(names) > 1 else ''} "
                                   + ", ".join(f"'{n}' {_fmt_shape(s or ())}" for n, s in zip(names, shapes)))


# --------------------------------------------------------------------------- helpers


def progress(iterable, total: int | None = None, desc: str | None = None, force: bool | None = None):
    """`iterable` under a tqdm progress bar on stderr when tqdm is installed and stderr is a
    terminal (force=True: whenever tqdm is installed; force=False: never); else unchanged."""
    enabled = force if force is not None else _stderr_is_tty()
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def split_holdout(samples, fraction: float = 0.2) -> tuple[list, list]:
    """(calibration, held back): the first n - floor(n * fraction) samples calibrate, the rest
    are held back for the report; deterministic, and at least one sample calibrates."""
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction < 1.0):
        raise ConversionError(f"the held-back fraction must be in [0, 1), got {fraction!r}")
    samples = list(samples)
    n = len(samples)
    held = min(int(n * fraction), max(n - 1, 0))
    return samples[:n - held], samples[n - held:]
