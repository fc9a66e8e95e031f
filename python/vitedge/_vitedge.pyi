"""Type stubs of the extension module behind `vitedge` (use the `vitedge` package's API)."""

from typing import Dict, List, Optional

__version__: str
LIBCAMERA_FORMATS: Dict[str, str]

class Prediction:
    """One ranked class: its index, label (the index as text when the blob has none) and softmax
    probability. Immutable; compares and hashes by its three fields."""

    __match_args__ = ("index", "label", "score")
    @property
    def index(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    def __init__(self, index: int, label: str, score: float) -> None: ...
    def to_dict(self) -> Dict[str, object]:
        """``{"index": …, "label": …, "score": …}``."""

class Error(RuntimeError):
    """A vitedge failure (blob, image, engine, conversion); the CLI's message."""

class InputError(Error, ValueError):
    """An argument that does not fit (frame size/stride/format, dtype, shape, name)."""

class Model:
    header_json: str
    labels: List[str]
    kernels: str
    backend: str
    threads: int
    def __init__(self, path: str, threads: int = 0, kernels: str = "auto", backend: str = "native") -> None: ...
    def classify_path(self, path: str, top: int) -> List[Prediction]: ...
    def classify_rgb(self, image: object, top: int) -> List[Prediction]: ...
    def classify_frame(
        self, frame: object, pixel_format: str, width: int, height: int, stride: Optional[int], color_matrix: str, color_range: str, top: int
    ) -> List[Prediction]: ...
    def logits(self, tensor: object, out: object) -> None: ...

def convert(
    checkpoint: str,
    output: str,
    precision: str,
    calibrate: Optional[str],
    calib_count: int,
    labels: Optional[str],
    arch: Optional[str],
    heads: Optional[int],
    preprocess_json: Optional[str],
) -> str: ...
