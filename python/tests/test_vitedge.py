"""The vitedge Python package against the CLI it wraps: same results on the same images and frames,
clear exceptions on bad input, several threads, the GIL released during inference, the converter
and the installed commands."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import vitedge
from conftest import CHECKPOINT, LABELS, command, run_json_lines
from frames import nv12_frames

PRECISIONS = ["f32", "int8"]


def as_pairs(predictions):
    return [(p.index, p.score) for p in predictions]


def assert_same_ranking(got, want, what):
    """Same top-k indices in the same order, scores within 1e-6."""
    assert [i for i, _ in got] == [i for i, _ in want], what
    for (_, a), (_, b) in zip(got, want):
        assert abs(a - b) <= 1e-6, f"{what}: {got} vs {want}"


def cli_pairs(line):
    return [(t["index"], t["score"]) for t in line["top"]]


def sample_frames(images, w=320, h=240):
    return nv12_frames(images[:3], w, h)


# --- header ------------------------------------------------------------------------------------


def test_header_properties(models):
    m = models["f32"]
    assert m.architecture == "vit_tiny_patch16_224"
    assert (m.precision, m.num_classes, m.input_size, m.input_shape) == ("f32", 1000, 224, (1, 3, 224, 224))
    assert len(m.labels) == 1000 and m.labels[0] == "tench"
    assert m.preprocessing["interpolation"] == "bicubic" and abs(m.preprocessing["crop_pct"] - 0.9) < 1e-6
    assert m.quantization is None and m.backend == "native" and m.threads == 2 and m.kernels
    assert m.header["config"]["depth"] == 12 and "vit_tiny" in repr(m)
    q = models["int8"].quantization
    assert models["int8"].precision == "int8" and len(q["layers"]) == 50 and len(q["calibration_images"]) == 8
    assert {"weights", "activations", "sqnr_db"} <= set(q["layers"][0])


# --- same results as the CLI -------------------------------------------------------------------


@pytest.mark.parametrize("precision", PRECISIONS)
def test_classify_paths_equal_vitedge_classify(models, blobs, images, precision):
    lines = run_json_lines([command("vitedge"), "classify", "--json", "--top", "5", "--threads", "2", "--model", str(blobs[precision])] + [str(p) for p in images])
    assert len(lines) == len(images)
    for path, line in zip(images, lines):
        got = models[precision].classify(path, top=5)
        assert all(p.label == models[precision].labels[p.index] for p in got)
        assert_same_ranking(as_pairs(got), cli_pairs(line), f"{precision} {path.name}")
        assert [p.label for p in got] == [t["label"] for t in line["top"]]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_pil_images_and_numpy_arrays_equal_the_file(models, images, tmp_path, precision):
    """A lossless PNG classified from its path (vitedge's decoder), as a PIL.Image (RGB, L, RGBA,
    P: converted like timm's convert("RGB")) and as a numpy array: the same results."""
    m = models[precision]
    src = Image.open(images[1]).convert("RGB")
    for mode in ["RGB", "L", "RGBA", "P"]:
        img = src.convert(mode)
        png = tmp_path / f"img-{mode}.png"
        img.save(png)
        from_file = as_pairs(m.classify(png))
        assert as_pairs(m.classify(Image.open(png))) == from_file, mode
        if mode == "RGB":
            arr = np.asarray(img)
            assert as_pairs(m.classify(arr)) == from_file
            # A non-contiguous view (every other column) is copied once and still works.
            half = arr[:, ::2]
            assert as_pairs(m.classify(half)) == as_pairs(m.classify(np.ascontiguousarray(half)))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_nv12_frames_equal_vitedge_stream(models, blobs, images, tmp_path, precision):
    frames = sample_frames(images)
    h, w = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
    raw = tmp_path / "frames.nv12"
    raw.write_bytes(b"".join(f.tobytes() for f in frames))
    lines = run_json_lines([command("vitedge"), "stream", "--model", str(blobs[precision]), "--input", str(raw), "--pixel-format", "nv12", "--size", f"{w}x{h}", "--top", "5", "--threads", "2"])
    assert [l["frame"] for l in lines] == list(range(len(frames)))
    m = models[precision]
    for f, line in zip(frames, lines):
        want = cli_pairs(line)
        assert_same_ranking(as_pairs(m.classify_frame(f, "nv12", size=(w, h))), want, f"{precision} frame {line['frame']}")
        # Any buffer: bytes and memoryview give the same.
        assert_same_ranking(as_pairs(m.classify_frame(f.tobytes(), "nv12", size=(w, h))), want, "bytes")
        # Picamera2-style padded rows: a (h * 3 // 2, stride) array, stride taken from its shape.
        stride = w + 64
        padded = np.zeros((f.shape[0], stride), np.uint8)
        padded[:, :w] = f
        assert_same_ranking(as_pairs(m.classify_frame(padded, "NV12", size=(w, h))), want, "padded nv12")
        # A strided view (not C-contiguous) is copied once, then read like the packed frame.
        assert not padded[:, :w].flags.c_contiguous
        assert_same_ranking(as_pairs(m.classify_frame(padded[:, :w], "nv12", size=(w, h))), want, "strided view")
        # The same frame as I420 (libcamera YUV420) with padded rows: U and V rows at stride / 2.
        y, uv = f[:h], f[h:].reshape(h // 2, w // 2, 2)
        planes = [np.pad(y, ((0, 0), (0, stride - w)))]
        for c in (0, 1):
            planes.append(np.pad(uv[..., c], ((0, 0), (0, stride // 2 - w // 2))).reshape(h // 4, stride))
        i420 = np.concatenate(planes)
        assert i420.shape == (h * 3 // 2, stride)
        assert_same_ranking(as_pairs(m.classify_frame(i420, "YUV420", size=(w, h))), want, "padded i420")


def test_logits_of_a_tensor_equal_classify(models):
    """A uniform image stays uniform through resize and crop, so its input tensor is known exactly:
    softmax(logits(tensor)) must rank like classify(image)."""
    m = models["f32"]
    value = 131
    img = np.full((300, 400, 3), value, np.uint8)
    mean = np.array(m.preprocessing["mean"], np.float32)
    std = np.array(m.preprocessing["std"], np.float32)
    pixel = (np.float32(value) / np.float32(255.0) - mean) / std
    tensor = np.broadcast_to(pixel.reshape(3, 1, 1), (3, 224, 224)).astype(np.float32)
    logits = m.logits(tensor[None])
    assert logits.dtype == np.float32 and logits.shape == (1000,)
    assert np.array_equal(m.logits(tensor), logits)
    # A float32 view at an odd address (not aligned) is copied once, not misread.
    unaligned = np.frombuffer(b"\0" + tensor.tobytes(), np.float32, offset=1).reshape(tensor.shape)
    assert not unaligned.flags.aligned
    assert np.array_equal(m.logits(unaligned), logits)
    e = np.exp(logits.astype(np.float64) - logits.max())
    probs = e / e.sum()
    want = [(int(i), float(probs[i])) for i in np.argsort(-probs, kind="stable")[:5]]
    assert_same_ranking(as_pairs(m.classify(img)), want, "uniform image")


# --- bad input -----------------------------------------------------------------------------------


def test_bad_paths_and_corrupt_blobs_raise_vitedge_errors(blobs, tmp_path):
    with pytest.raises(vitedge.Error, match="no-such-model.vitb") as e:
        vitedge.Model(tmp_path / "no-such-model.vitb")
    assert isinstance(e.value, RuntimeError)
    data = blobs["f32"].read_bytes()
    truncated = tmp_path / "truncated.vitb"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(vitedge.Error) as e:
        vitedge.Model(truncated)
    assert str(e.value)
    garbage = tmp_path / "garbage.vitb"
    garbage.write_bytes(b"this is not a vitedge blob" * 100)
    with pytest.raises(vitedge.Error):
        vitedge.Model(garbage)
    with pytest.raises(vitedge.Error, match="no-such-kernels"):
        vitedge.Model(blobs["f32"], kernels="no-such-kernels")
    with pytest.raises(vitedge.InputError, match="native, tract"):
        vitedge.Model(blobs["f32"], backend="onnx")


def test_predictions_are_small_immutable_values(models, images):
    got = models["int8"].classify(images[0], top=3)
    p = got[0]
    assert isinstance(p, vitedge.Prediction) and isinstance(p.index, int) and isinstance(p.label, str) and isinstance(p.score, float)
    assert repr(p) == f"Prediction(index={p.index}, label={p.label!r}, score={p.score!r})"
    same = vitedge.Prediction(p.index, p.label, p.score)
    assert same == p and hash(same) == hash(p) and not (same != p)
    assert vitedge.Prediction(p.index, p.label, p.score / 2) != p and p != (p.index, p.label, p.score)
    assert p.to_dict() == {"index": p.index, "label": p.label, "score": p.score}
    import pickle

    assert pickle.loads(pickle.dumps(got)) == got
    assert vitedge.Prediction.__match_args__ == ("index", "label", "score")
    with pytest.raises(AttributeError):
        p.score = 1.0


def test_bad_frames_images_and_tensors_raise_input_errors(models, tmp_path):
    m = models["f32"]
    frame = np.zeros(320 * 240 * 3 // 2, np.uint8)
    with pytest.raises(vitedge.InputError, match="115199 bytes.*115200") as e:
        m.classify_frame(frame[:-1], "nv12", size=(320, 240))
    assert isinstance(e.value, ValueError) and isinstance(e.value, vitedge.Error)
    with pytest.raises(vitedge.InputError, match="dtype float32"):
        m.classify_frame(frame.astype(np.float32), "nv12", size=(320, 240))
    with pytest.raises(vitedge.InputError, match="pixel format `nv21`"):
        m.classify_frame(frame, "nv21", size=(320, 240))
    with pytest.raises(vitedge.InputError, match="size"):
        m.classify_frame(frame, "nv12")
    with pytest.raises(vitedge.InputError, match="out of range"):
        m.classify_frame(frame, "nv12", size=(0, 240))
    with pytest.raises(vitedge.InputError, match="stride"):
        m.classify_frame(frame, "nv12", size=(320, 240), stride=100)
    with pytest.raises(vitedge.InputError, match="must be a numpy array"):
        m.classify_frame([1, 2, 3], "nv12", size=(1, 1))
    with pytest.raises(vitedge.InputError, match="dtype uint16"):
        m.classify(np.zeros((50, 60, 3), np.uint16))
    with pytest.raises(vitedge.InputError, match=r"shape \[50, 60\]"):
        m.classify(np.zeros((50, 60), np.uint8))
    with pytest.raises(vitedge.InputError, match="top"):
        m.classify(np.zeros((50, 60, 3), np.uint8), top=0)
    not_an_image = tmp_path / "not-an-image.jpg"
    not_an_image.write_text("hello")
    with pytest.raises(vitedge.Error, match="cannot decode image"):
        m.classify(not_an_image)
    with pytest.raises(vitedge.Error, match="missing.png"):
        m.classify(tmp_path / "missing.png")
    with pytest.raises(vitedge.InputError, match="dtype float64"):
        m.logits(np.zeros((1, 3, 224, 224)))
    with pytest.raises(vitedge.InputError, match=r"shape \[1, 3, 225, 224\]"):
        m.logits(np.zeros((1, 3, 225, 224), np.float32))
    # The model still works after all that.
    assert len(m.classify_frame(frame, "nv12", size=(320, 240))) == 5


def test_bad_calls_in_a_fresh_interpreter_raise_and_it_exits_normally(blobs):
    """Bad calls in a child interpreter: each raises, and the process exits normally (no abort,
    no segfault, which would take pytest itself down in the tests above)."""
    code = f"""
import numpy as np, vitedge
m = vitedge.Model({str(blobs['int8'])!r}, threads=1)
for call in [lambda: m.classify_frame(b"x" * 10, "yuyv", size=(640, 480)),
             lambda: m.classify_frame(np.zeros(10, np.int16), "rgb24", size=(2, 2)),
             lambda: m.logits(np.zeros(5, np.float32)),
             lambda: vitedge.Model("/nonexistent.vitb")]:
    try:
        call()
    except vitedge.Error as e:
        print(type(e).__name__ + ":", e)
print("survived")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "survived" and len(lines) == 5, out.stdout
    assert [l.split(":")[0] for l in lines[:4]] == ["InputError", "InputError", "InputError", "Error"], out.stdout


# --- threads and the GIL -------------------------------------------------------------------------


def test_two_threads_classifying_at_once_get_the_single_thread_results(models, images):
    m = models["int8"]
    frames = sample_frames(images)
    w, h = 320, 240
    alone = [as_pairs(m.classify_frame(f, "nv12", size=(w, h))) for f in frames] + [as_pairs(m.classify(p)) for p in images[:3]]
    results = {}

    def work(name):
        got = []
        for _ in range(3):
            got += [as_pairs(m.classify_frame(f, "nv12", size=(w, h))) for f in frames]
            got += [as_pairs(m.classify(p)) for p in images[:3]]
        results[name] = got

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        assert results[name] == alone * 3, name


def test_the_gil_is_released_during_inference(blobs, images):
    """With a huge switch interval a thread holding the GIL is never forced to give it up, so a
    counting thread advances only while the main thread blocks or has released it. Control: pure
    Python work (GIL held) lets it advance 0 times; classify_frame (GIL released) lets it run."""
    slow = vitedge.Model(blobs["f32"], threads=1, kernels="scalar")
    frame = sample_frames(images)[0]
    count, stop = 0, False

    def counter():
        nonlocal count
        while not stop:
            count += 1
            time.sleep(0)  # releases the GIL, so the main thread can take it back

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    t = threading.Thread(target=counter)
    try:
        t.start()
        while count == 0:
            time.sleep(0.001)
        c0, x = count, 0
        for i in range(300_000):
            x += i
        control = count - c0
        c0 = count
        for _ in range(3):
            slow.classify_frame(frame, "nv12", size=(320, 240))
        during = count - c0
    finally:
        stop = True
        sys.setswitchinterval(old)
        t.join()
    assert control == 0, "the control should hold the GIL throughout"
    assert during > 0, "the counter made no progress during inference: the GIL was held"
    print(f"counter iterations: {control} during pure Python work, {during} during 3 scalar-kernel inferences")


# --- converter and commands ----------------------------------------------------------------------


def test_convert_writes_the_blob_vitedge_quant_writes(blobs, tmp_path):
    cli = tmp_path / "cli.vitb"
    subprocess.run([command("vitedge-quant"), "convert", str(CHECKPOINT), "-o", str(cli), "--labels", str(LABELS)], check=True, capture_output=True)
    assert cli.read_bytes() == blobs["f32"].read_bytes()
    f16 = tmp_path / "f16.vitb"
    s = vitedge.convert(CHECKPOINT, f16, precision="f16", preprocess={"crop_pct": 0.875, "interpolation": "bilinear"})
    assert s["bytes"] == f16.stat().st_size and s["architecture"] == "vit_tiny_patch16_224"
    p = vitedge.Model(f16).preprocessing
    assert abs(p["crop_pct"] - 0.875) < 1e-6 and p["interpolation"] == "bilinear"
    with pytest.raises(vitedge.Error, match="not a preprocessing field"):
        vitedge.convert(CHECKPOINT, f16, preprocess={"crop": 0.875})
    with pytest.raises(vitedge.Error, match="needs calibration images"):
        vitedge.convert(CHECKPOINT, tmp_path / "x.vitb", precision="int8")
    with pytest.raises(vitedge.InputError, match="precision `int4`"):
        vitedge.convert(CHECKPOINT, tmp_path / "x.vitb", precision="int4")
    with pytest.raises(vitedge.Error, match="missing.safetensors"):
        vitedge.convert(tmp_path / "missing.safetensors", tmp_path / "x.vitb")


def test_the_wheel_installs_both_commands():
    for name in ("vitedge", "vitedge-quant"):
        out = subprocess.run([command(name), "--version"], check=True, capture_output=True, text=True).stdout
        assert out.startswith(f"{name} {vitedge.__version__}"), out
    info = subprocess.run([command("vitedge"), "info"], check=True, capture_output=True, text=True).stdout
    assert "tract backend: not built" in info
