"""Imaging quality from BRISQUE (the ``brisque`` wheel, which ships its SVR model).

VBench scores imaging quality with MUSIQ (SPAQ-trained) as ``score / 100`` per frame, averaged;
MUSIQ's weights are not available here, so BRISQUE stands in.  BRISQUE is lower-is-better on a
nominal 0-100 scale; it is mapped to ``clip(1 - brisque / 100, 0, 1)`` so that, like VBench's
value, higher is better and it lies in [0, 1].

brisque 0.2.0 fails under numpy 2 in ``BRISQUE.scale_features`` (it calls ``float()`` on
one-element arrays); :class:`_Brisque` overrides that method.  It also overrides two methods for
speed without changing the result: ``score`` skips a full-resolution MSCN computation whose
result 0.2.0 discards, and ``calculate_mscn_coefficients`` does its Gaussian local mean and
variance with ``cv2.filter2D`` (zero border, like ``scipy.signal.convolve2d(..., 'same')``; the
kernel is symmetric) instead of scipy's direct convolution, 2-3x faster.  Scores agree with the
package's own code to ~1e-3 or better (rounding in flat areas).  Nothing in site-packages is patched.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

BRISQUE_FRAMES = 4
_lock = threading.Lock()
_model = None


def _load():
    global _model
    with _lock:
        if _model is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from brisque import BRISQUE

            import cv2
            import skimage.color

            class _Brisque(BRISQUE):
                def score(self, img):
                    image = self.remove_alpha_channel(self.load_image(img))
                    gray = skimage.color.rgb2gray(image)
                    feats = self.calculate_brisque_features(gray, kernel_size=7, sigma=7 / 6)
                    half = cv2.resize(gray, None, fx=1 / 2, fy=1 / 2, interpolation=cv2.INTER_CUBIC)
                    half_feats = self.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6)
                    return self.calculate_image_quality_score(np.concatenate((feats, half_feats)))

                def calculate_mscn_coefficients(self, image, kernel_size=6, sigma=7 / 6):
                    kernel = self.gaussian_kernel2d(kernel_size, sigma=sigma)
                    img = np.asarray(image, dtype=np.float64)
                    mean = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_CONSTANT)
                    sq = cv2.filter2D(img * img, -1, kernel, borderType=cv2.BORDER_CONSTANT)
                    deviation = np.sqrt(np.abs(mean ** 2 - sq))
                    return (img - mean) / (deviation + 1 / 255)

                def scale_features(self, features):  # numpy-2 safe version of the 0.2.0 method
                    feats = np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in features])
                    lo = np.asarray(self.scale_params["min_"], dtype=np.float64).reshape(-1)
                    hi = np.asarray(self.scale_params["max_"], dtype=np.float64).reshape(-1)
                    return -1.0 + 2.0 / (hi - lo) * (feats - lo)

            _model = _Brisque(url=False)
        return _model


def brisque_available() -> tuple[bool, str]:
    try:
        _load()
    except Exception as exc:  # ImportError, or libsvm failing to load the model
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def brisque_score(frame: np.ndarray) -> float:
    """BRISQUE score of one RGB uint8 frame (lower is better); NaN for a featureless frame."""
    model = _load()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(model.score(frame))


def frame_sample(num_frames: int, count: int = BRISQUE_FRAMES) -> list[int]:
    """Up to ``count`` evenly spaced frame indices, first and last included."""
    if num_frames <= count:
        return list(range(num_frames))
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, count)})


def brisque_to_unit(score: float) -> float:
    return float(np.clip(1.0 - score / 100.0, 0.0, 1.0))
