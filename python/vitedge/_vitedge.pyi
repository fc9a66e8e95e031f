"""Type stubs of the extension module behind `vitedge` (use the `vitedge` package's API)."""

from typing import List, Optional, Tuple

__version__: str

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
    def classify_path(self, path: str, top: int) -> List[Tuple[int, float]]: ...
    def classify_rgb(self, image: object, top: int) -> List[Tuple[int, float]]: ...
    def classify_frame(
        self, frame: object, pixel_format: str, width: int, height: int, stride: Optional[int], color_matrix: str, color_range: str, top: int
    ) -> List[Tuple[int, float]]: ...
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
