"""vitedge: quantized Vision Transformer inference for edge devices.

The runtime (:class:`Model`), the converter (:func:`convert`) and, installed with the wheel, the
``vitedge`` and ``vitedge-quant`` commands. Everything runs vitedge's Rust code: ``Model.classify``
does what ``vitedge classify`` does, ``Model.classify_frame`` what ``vitedge stream`` does, so
results are the CLI's.

    >>> import vitedge
    >>> model = vitedge.Model("vit_tiny_int8.vitb")
    >>> model.classify("cat.jpg", top=3)
    [Prediction(index=281, label='tabby', score=0.64), ...]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from . import _vitedge
from ._vitedge import Error, InputError, Prediction, __version__

__all__ = ["Model", "Prediction", "convert", "Error", "InputError", "PIXEL_FORMATS", "__version__"]

#: Raw frame formats (``vitedge stream --pixel-format``), ffmpeg ``rawvideo`` layouts.
PIXEL_FORMATS = ("rgb24", "bgr24", "yuyv", "uyvy", "nv12", "i420")

#: libcamera / Picamera2 format names and the vitedge format with their byte order. (libcamera's
#: ``RGB888`` is stored B, G, R in memory, ``BGR888`` R, G, B.) ``classify_frame`` takes either name.
LIBCAMERA_FORMATS: Dict[str, str] = dict(_vitedge.LIBCAMERA_FORMATS)

ImageLike = Union[str, "os.PathLike[str]", "np.ndarray", Any]


# `Prediction` (one ranked class: `index`, `label`, `score`; immutable, comparable, hashable,
# `to_dict()`) is made by the extension: a result then costs no Python code.


def _array(a: Any) -> Any:
    """A C-contiguous numpy array of ``a``, for the extension to read in place: numpy arrays as they
    are (copied once if not C-contiguous or not aligned: slices, transposes), other buffers (bytes,
    bytearray, memoryview, …) as a numpy view of their memory (no copy); anything else unchanged,
    for the extension to reject with a message."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(memoryview(a))
        except TypeError:
            return a
    return a if a.flags.c_contiguous and a.flags.aligned else np.require(a, requirements="CA")


def _is_pil_image(image: Any) -> bool:
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(image, pil.Image)


class Model:
    """A vitedge model (``.vitb`` blob), mapped once, with its inference engine.

    Args:
        path: the blob, as written by ``vitedge-quant convert`` or :func:`convert`.
        threads: worker threads of the engine (0 = all cores).
        kernels: ``"auto"`` (the CPU's best), ``"scalar"``, or a kernel set ``vitedge info`` lists.
        backend: ``"native"`` (vitedge's own engine). ``"tract"`` needs a vitedge built with the
            ``tract`` feature; the wheels leave it out.

    Threads: a Model holds one engine behind a lock. It can be shared by several Python threads;
    their calls run one at a time, each on the engine's ``threads`` worker threads, and the GIL is
    released while an image is decoded, preprocessed and classified, so other Python threads keep
    running. To run several inferences at the same time, open one Model per thread (with
    ``threads=1`` each): the blob is memory-mapped, so the weights are shared, not copied.
    Arrays are read in place while the GIL is released: do not modify them from another thread
    during a call.

    Raises:
        Error: the blob cannot be opened, is corrupt, or the engine cannot be built (the CLI's
            message).
        InputError: an unknown backend name.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], threads: int = 0, kernels: str = "auto", backend: str = "native") -> None:
        self._path = os.fspath(path)
        self._model = _vitedge.Model(self._path, threads, kernels, backend)
        self._header: Dict[str, Any] = json.loads(self._model.header_json)
        self._labels: Tuple[str, ...] = tuple(self._model.labels)

    def __repr__(self) -> str:
        return f"vitedge.Model({self._path!r}: {self.architecture}, {self.precision}, {self.num_classes} classes, {self.kernels})"

    # --- header -------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The blob's path."""
        return self._path

    @property
    def header(self) -> Dict[str, Any]:
        """The whole blob header (as ``vitedge inspect --json`` prints it)."""
        return json.loads(self._model.header_json)

    @property
    def architecture(self) -> str:
        """Architecture name, e.g. ``"vit_tiny_patch16_224"`` (``"custom"`` when not named)."""
        return self._header["config"]["arch"]

    @property
    def config(self) -> Dict[str, Any]:
        """Network configuration: depth, embed_dim, num_heads, patch_size, image_size, …"""
        return dict(self._header["config"])

    @property
    def precision(self) -> str:
        """Weight precision: ``"f32"``, ``"f16"``, ``"bf16"`` or ``"int8"``."""
        return self._header["precision"]

    @property
    def labels(self) -> List[str]:
        """Class labels in logit order (the index as text when the blob has none)."""
        return list(self._labels)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self._labels)

    @property
    def input_size(self) -> int:
        """Side of the square network input, in pixels (images of any size are resized and
        cropped to it)."""
        return int(self._header["config"]["image_size"])

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        """Shape of the tensor :meth:`logits` takes: ``(1, 3, input_size, input_size)``."""
        s = self.input_size
        return (1, 3, s, s)

    @property
    def preprocessing(self) -> Dict[str, Any]:
        """The preprocessing the blob was made with (interpolation, crop_pct, mean, std, …)."""
        return dict(self._header["preprocess"])

    @property
    def quantization(self) -> Optional[Dict[str, Any]]:
        """int8 blobs: the per-layer choices (weights, activations, SmoothQuant α, SQNR) and the
        calibration images; None for float blobs."""
        return self._header.get("quantization")

    @property
    def kernels(self) -> str:
        """The kernels the engine runs (as ``vitedge bench`` prints them)."""
        return self._model.kernels

    @property
    def backend(self) -> str:
        """``"native"`` or ``"tract"``."""
        return self._model.backend

    @property
    def threads(self) -> int:
        """Worker threads of the engine."""
        return self._model.threads

    # --- inference ----------------------------------------------------------------------------

    def classify(self, image: ImageLike, top: int = 5) -> List[Prediction]:
        """Classifies one image with the blob's preprocessing; the ``top`` best classes, best first.

        ``image`` is
          * a path (str or os.PathLike) to a JPEG or PNG file: decoded and preprocessed exactly
            like ``vitedge classify``;
          * a ``PIL.Image``: converted with ``image.convert("RGB")`` when it is not RGB (as timm
            does), its pixels taken once with ``tobytes()``;
          * a numpy ``uint8`` array of shape ``(height, width, 3)``, RGB, any size: read in place
            when C-contiguous (else copied once).

        Raises:
            Error: the file cannot be read or decoded.
            InputError: wrong dtype or shape, ``top < 1``.
        """
        if isinstance(image, (str, os.PathLike)):
            return self._model.classify_path(os.fspath(image), top)
        if _is_pil_image(image):
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            w, h = rgb.size
            pixels = np.frombuffer(rgb.tobytes(), dtype=np.uint8).reshape(h, w, 3)
            return self._model.classify_rgb(pixels, top)
        return self._model.classify_rgb(image, top)

    def classify_frame(
        self,
        frame: Any,
        pixel_format: str = "nv12",
        size: Optional[Tuple[int, int]] = None,
        *,
        stride: Optional[int] = None,
        color_matrix: str = "bt601",
        color_range: str = "limited",
        top: int = 5,
    ) -> List[Prediction]:
        """Classifies one raw camera frame exactly like ``vitedge stream`` (fused colour conversion,
        resize, crop and normalization; no allocation per frame once the size is known).

        Args:
            frame: the bytes of the frame: a numpy ``uint8`` array of any shape (e.g. what
                Picamera2's ``capture_array("lores")`` returns), ``bytes``, a ``memoryview`` or any
                other buffer. Read in place, not copied.
            pixel_format: one of :data:`PIXEL_FORMATS`, or a libcamera name
                (:data:`LIBCAMERA_FORMATS`: ``"YUV420"``, ``"RGB888"``, …).
            size: ``(width, height)`` in pixels.
            stride: bytes from one row of the first plane to the next (V4L2 ``bytesperline``,
                Picamera2's ``camera_config[stream]["stride"]``); NV12's chroma rows have the same
                stride, I420's U and V rows half of it. None: the row length of a 2-D (or 3-D)
                array whose first axis is the frame's rows (``height``, or ``height * 3 / 2`` for
                4:2:0, as Picamera2 returns them), else a tightly packed frame.
            color_matrix: ``"bt601"`` or ``"bt709"`` (YUV formats).
            color_range: ``"limited"`` or ``"full"`` (YUV formats).
            top: how many classes to return.

        Raises:
            InputError: the buffer does not hold a frame of this size, stride and format (the
                message says what it holds and what was expected), a wrong dtype, an unknown name.
        """
        # As little Python as possible here: a frame comes right after an inference, which has
        # pushed the interpreter out of the CPU's caches (the extension reads the array, works
        # out the stride and makes the results).
        if size is None:
            raise InputError("size=(width, height) is required")
        width, height = size
        return self._model.classify_frame(frame, pixel_format, width, height, stride, color_matrix, color_range, top)

    def logits(self, tensor: Any) -> "np.ndarray":
        """Runs the network on a preprocessed float32 tensor of shape ``(1, 3, S, S)`` or
        ``(3, S, S)`` (S = :attr:`input_size`; CHW, normalized with the blob's mean and std) and
        returns the raw logits, a float32 array of :attr:`num_classes` values. No preprocessing.

        Raises:
            InputError: wrong dtype or shape.
        """
        out = np.empty(self.num_classes, dtype=np.float32)
        self._model.logits(tensor, out)
        return out


def convert(
    checkpoint: Union[str, "os.PathLike[str]"],
    output: Union[str, "os.PathLike[str]"],
    precision: str = "f32",
    calibrate: Optional[Union[str, "os.PathLike[str]"]] = None,
    calib_count: int = 64,
    labels: Optional[Union[str, "os.PathLike[str]"]] = None,
    arch: Optional[str] = None,
    heads: Optional[int] = None,
    preprocess: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Converts a float checkpoint into a vitedge blob, like ``vitedge-quant convert``.

    Args:
        checkpoint: ``.safetensors`` (timm / Hugging Face), ``.pth``/``.pt`` or Lightning ``.ckpt``.
        output: the blob to write (``.vitb``).
        precision: ``"f32"``, ``"f16"``, ``"bf16"`` or ``"int8"``.
        calibrate: int8: a folder of JPEG/PNG calibration images.
        calib_count: int8: how many of them to use (evenly spaced by name).
        labels: a labels file, one class per line in logit order (``n01440764 tench`` or ``tench``).
        arch: a timm architecture name (default: the file name's prefix if known, else inferred).
        heads: attention heads of an unnamed architecture (default embed_dim / 64).
        preprocess: overrides of the preprocessing stored in the blob, by header name, e.g.
            ``{"crop_pct": 0.875, "mean": [0.485, 0.456, 0.406], "interpolation": "bilinear"}``.

    Returns:
        ``{"output", "bytes", "precision", "architecture", "report"}``; ``report`` is the int8
        per-layer report (``vitedge-quant convert --report``), None for float blobs.

    Raises:
        Error: the checkpoint cannot be read or converted (the CLI's message).
        InputError: an unknown precision or a preprocess dict that is not JSON.
    """
    summary = _vitedge.convert(
        os.fspath(checkpoint),
        os.fspath(output),
        precision,
        None if calibrate is None else os.fspath(calibrate),
        calib_count,
        None if labels is None else os.fspath(labels),
        arch,
        heads,
        None if preprocess is None else json.dumps(preprocess),
    )
    return json.loads(summary)
