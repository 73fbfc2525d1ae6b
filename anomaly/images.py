"""Spectrogram images <-> log-mel: the old system's second input, and what the app draws.

Convention: 8-bit grayscale PNG, one row per mel band with the LOWEST frequency in the BOTTOM row, one
column per frame with time running to the right. A pixel value ``p`` stands for
``db_min + p / 255 * (db_max - db_min)`` decibels, where ``db_min`` and ``db_max`` are stored in the bundle
(defaults -100 and 20 dB). The image must have exactly ``n_mels`` rows and at least one window of columns.
Min-max normalised images from other tools lose the absolute level and cannot be scored faithfully.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from anomaly.decoding import short_reason
from anomaly.errors import AudioInputError
from anomaly.features import FeatureParams, max_frames


def log_mel_to_image(spec_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """8-bit grayscale image of a log-mel: low frequencies at the bottom, time to the right."""
    scaled = (spec_db - params.db_min) / (params.db_max - params.db_min) * 255.0
    return np.flipud(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def image_to_log_mel(
    image: object, params: FeatureParams, *, name: str = "image", max_seconds: float | None = None
) -> np.ndarray:
    """Read a spectrogram image (path, bytes, PIL image or array) back into log-mel decibels.

    Accepts 8-bit grayscale, or RGB(A) whose three colour channels are equal (a gray image saved as
    colour). Colour-mapped pictures and images of the wrong height are refused with a message that says
    what is expected. With ``max_seconds``, an image wider than the frames of a recording that long is
    refused; the size is read from the file's header, before its pixels are decoded, and decompression
    bombs (PIL's limit) are refused with a message.
    """
    from PIL import Image, UnidentifiedImageError

    widest = None if max_seconds is None else max_frames(params, max_seconds)
    try:
        if isinstance(image, (str, Path, bytes)):
            with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
                _check_image_size(im.size, params, name, widest)
                im.load()
                arr = _image_array(im)
        elif isinstance(image, Image.Image):
            _check_image_size(image.size, params, name, widest)
            arr = _image_array(image)
        else:
            arr = np.asarray(image)
    except Image.DecompressionBombError as exc:
        # PIL refuses before decoding and says how many pixels the header claims.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)) / 1e6:.0f} million pixels" if claimed else "too many pixels"
        raise AudioInputError(
            name,
            f"the image holds {size}, more than {Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} million "
            "(a decompression bomb); a spectrogram is "
            f"{params.n_mels} pixels high and {_width_range(params, widest)} wide",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise AudioInputError(name, f"not a readable image ({short_reason(exc)})") from None
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
        elif arr.shape[2] == 3:
            spread = np.ptp(arr.astype(np.int16), axis=2).max() if arr.size else 0
            if spread > 2:
                raise AudioInputError(
                    name,
                    "this looks like a colour-mapped picture; expected an 8-bit grayscale spectrogram "
                    "(low frequencies at the bottom, time to the right)",
                )
            arr = arr[:, :, 0]
        else:
            raise AudioInputError(name, f"unsupported image with {arr.shape[2]} channels")
    if arr.ndim != 2:
        raise AudioInputError(name, "expected a 2-D grayscale spectrogram image")
    if arr.dtype != np.uint8:
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 255 or not np.isfinite(arr).all()):
            raise AudioInputError(name, "pixel values must be 8-bit (0 to 255)")
        arr = arr.astype(np.uint8)
    height, width = arr.shape
    _check_image_size((width, height), params, name, widest)
    if int(arr.max()) == int(arr.min()):
        raise AudioInputError(name, "the image is blank (every pixel has the same value)")
    db = params.db_min + np.flipud(arr).astype(np.float32) / 255.0 * (params.db_max - params.db_min)
    return np.ascontiguousarray(db, dtype=np.float32)


def _width_range(params: FeatureParams, widest: int | None) -> str:
    return f"at least {params.window_frames}" + ("" if widest is None else f" and at most {widest}")


def _check_image_size(size: tuple[int, int], params: FeatureParams, name: str, widest: int | None) -> None:
    width, height = size
    if height != params.n_mels:
        raise AudioInputError(
            name,
            f"the image is {width}x{height} pixels; a spectrogram must be {params.n_mels} pixels high "
            f"(one row per mel band) and {_width_range(params, widest)} wide",
        )
    if width < params.window_frames:
        raise AudioInputError(
            name, f"the image is {width} pixels wide; at least {params.window_frames} frames are needed"
        )
    if widest is not None and width > widest:
        seconds = (widest - 1) * params.frame_seconds
        raise AudioInputError(
            name,
            f"the image is {width} pixels wide, a recording of {(width - 1) * params.frame_seconds:.0f} s; "
            f"at most {widest} frames ({seconds:g} s) can be scored",
        )


def _image_array(im: object) -> np.ndarray:
    from PIL import Image

    assert isinstance(im, Image.Image)
    if im.mode in ("L", "RGB", "RGBA"):
        return np.asarray(im)
    if im.mode in ("I;16", "I", "F"):
        raise ValueError(f"{im.mode} images are not 8-bit; save the spectrogram as 8-bit grayscale")
    if im.mode == "P":
        return np.asarray(im.convert("RGB"))
    if im.mode == "LA":
        return np.asarray(im)[:, :, 0]
    return np.asarray(im.convert("RGB"))
