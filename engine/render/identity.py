"""Face identity: embedders, one similarity scale, and the identity gate.

Two backends compute a face embedding for the largest face in an image:

* ``dlib``: HOG face detector, 5-point landmarks and dlib's ResNet face descriptor (128 numbers),
  with the weight files shipped in the ``face-recognition-models`` package.
* ``insightface``: an insightface model pack (``buffalo_l``, ``antelopev2``, ``auraface`` ...) in
  ``FACE_MODEL_DIR``: SCRFD detection and an ArcFace-style recognition model (512 numbers).

Similarity is on one 0-1 scale where 1 is the same picture and the backend's own decision
boundary sits near the middle of the range:

* dlib: ``1 - d / 1.2`` (clipped), ``d`` the Euclidean distance of the descriptors. dlib's
  documented same-person rule ``d < 0.6`` is similarity ``> 0.5``. Default threshold
  :data:`storage.settings.DEFAULT_IDENTITY_THRESHOLDS` ``["dlib"] = 0.55`` (``d < 0.54``),
  a little stricter than dlib's.
* insightface: the cosine of the embeddings, clipped to 0-1. ArcFace models put different
  people near 0 and the same person above about 0.3; default threshold 0.35.

Those numbers, kept once in ``storage.settings``, are the defaults of ``IDENTITY_THRESHOLD``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

BACKENDS = ("dlib", "insightface")

NOTE_OK = "ok"
NOTE_BELOW = "below threshold"
NOTE_NO_FACE = "no face found"
NOTE_NO_REFERENCE = "reference has no face"


@dataclass
class Face:
    """One face found in an image: its box ``(left, top, right, bottom)`` in pixels and embedding."""

    box: tuple[int, int, int, int]
    embedding: np.ndarray

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)


class Embedder(Protocol):
    """Finds faces and embeds them; ``embed`` gives the largest face's embedding or ``None``."""

    backend: str
    dim: int

    def faces(self, image: Image.Image) -> list[Face]:
        """Every face found, largest first."""
        ...

    def embed(self, image: Image.Image) -> np.ndarray | None: ...


def _largest(faces: list[Face]) -> np.ndarray | None:
    return faces[0].embedding if faces else None


def similarity(a: np.ndarray | list[float], b: np.ndarray | list[float], backend: str) -> float:
    """Similarity of two embeddings of ``backend`` on the shared 0-1 scale (see the module doc)."""
    va = np.asarray(a, dtype=np.float64)
    vb = np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        raise ValueError(f"embeddings of different sizes: {va.shape} vs {vb.shape}")
    if backend == "dlib":
        return float(np.clip(1.0 - np.linalg.norm(va - vb) / 1.2, 0.0, 1.0))
    if backend == "insightface":
        denom = float(np.linalg.norm(va) * np.linalg.norm(vb)) or 1.0
        return float(np.clip(va @ vb / denom, 0.0, 1.0))
    raise ValueError(f"unknown face backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def face_recognition_models_dir() -> Path:
    """Folder of the dlib ``.dat`` files, found without importing the package (its __init__
    needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face-recognition-models package is not installed (pip install it)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibEmbedder:
    """dlib HOG detector + 5-point landmarks + ResNet descriptor (128-d), all on the CPU."""

    backend = "dlib"
    dim = 128

    def __init__(self, models_dir: Path | None = None, num_jitters: int = 0) -> None:
        import dlib  # heavy, and only needed here

        folder = models_dir or face_recognition_models_dir()
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self._encoder = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
        self._jitters = num_jitters

    def _detect(self, pixels: np.ndarray) -> list:
        # The HOG detector finds faces of about 80 px and up; upsampling halves that each time.
        longest = max(pixels.shape[:2])
        upsample = 0 if longest > 1000 else 1
        boxes = list(self._detector(pixels, upsample))
        if not boxes and longest <= 600:
            boxes = list(self._detector(pixels, upsample + 1))
        return sorted(boxes, key=lambda box: box.area(), reverse=True)

    def faces(self, image: Image.Image) -> list[Face]:
        pixels = _rgb_array(image)
        out = []
        for box in self._detect(pixels):
            shape = self._landmarks(pixels, box)
            descriptor = self._encoder.compute_face_descriptor(pixels, shape, self._jitters)
            corners = (box.left(), box.top(), box.right(), box.bottom())
            out.append(Face(corners, np.asarray(descriptor, dtype=np.float32)))
        return out

    def embed(self, image: Image.Image) -> np.ndarray | None:
        return _largest(self.faces(image))


class InsightFaceEmbedder:
    """insightface ``FaceAnalysis`` (detection + recognition) with a local model pack."""

    backend = "insightface"
    dim = 512

    def __init__(self, model_dir: Path, *, ctx_id: int | None = None, det_size: tuple[int, int] = (640, 640)) -> None:
        folder = Path(model_dir).expanduser()
        has_models = folder.is_dir() and (any(folder.glob("*.onnx")) or any(folder.glob("*.json")))
        if not has_models:
            raise FileNotFoundError(
                f"insightface model pack not found in {folder}: FACE_MODEL_DIR must be a folder holding "
                "the pack's .onnx files (for example buffalo_l, antelopev2 or auraface); nothing is downloaded"
            )
        import onnxruntime
        from insightface.app import FaceAnalysis  # heavy, and only needed here

        if ctx_id is None:  # the GPU when onnxruntime-gpu can use it, else the CPU
            ctx_id = 0 if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else -1

        # A folder path as ``name`` makes FaceAnalysis load it directly, never download.
        self._app = FaceAnalysis(name=str(folder.resolve()), allowed_modules=["detection", "recognition"])
        self._app.prepare(ctx_id=ctx_id, det_size=det_size)

    def faces(self, image: Image.Image) -> list[Face]:
        bgr = _rgb_array(image)[:, :, ::-1].copy()
        found = [
            Face(tuple(round(float(v)) for v in face.bbox), np.asarray(face.embedding, dtype=np.float32))  # type: ignore[arg-type]
            for face in self._app.get(bgr)
        ]
        return sorted(found, key=lambda face: face.area, reverse=True)

    def embed(self, image: Image.Image) -> np.ndarray | None:
        return _largest(self.faces(image))


@functools.lru_cache(maxsize=1)
def _shared_dlib_embedder() -> DlibEmbedder:
    return DlibEmbedder()


def load_embedder(backend: str, model_dir: Path | None = None) -> Embedder:
    """The embedder of ``backend``; insightface needs ``model_dir`` (FACE_MODEL_DIR).

    dlib's models are read-only after loading: one instance per process serves every engine (its
    loading holds the GIL for ~0.5 s, so :func:`engine.jobs.runner.import_engine_modules` does it
    before any front end connects)."""
    if backend == "dlib":
        return _shared_dlib_embedder()
    if backend == "insightface":
        if model_dir is None:
            raise FileNotFoundError(
                "FACE_BACKEND=insightface needs FACE_MODEL_DIR: the folder of a model pack such as buffalo_l"
            )
        return InsightFaceEmbedder(model_dir)
    raise ValueError(f"unknown face backend {backend!r}; expected one of {', '.join(BACKENDS)}")


# -- identity gate ------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One rendered candidate: the image, the seed it came from and its identity verdict."""

    image: Image.Image
    seed: int
    score: float | None
    note: str


@dataclass
class GateResult:
    """The gate's pick for one wanted image, and how many candidates it took."""

    best: Candidate
    tries: int


def identity_gate(
    render: Callable[[int], tuple[Image.Image, int]],
    embedder: Embedder | None,
    reference: np.ndarray | None,
    threshold: float,
    max_tries: int,
) -> GateResult:
    """Render candidates (``render(attempt) -> (image, seed)``) until one reaches ``threshold``.

    Each candidate is compared with ``reference``; the first that reaches the threshold is
    returned at once, otherwise the best after ``max_tries`` ("below threshold"), or the first when
    no candidate showed a face ("no face found"). With no reference face (or no embedder) there
    is nothing to compare: a single try, note "reference has no face", score ``None``.
    """
    if embedder is None or reference is None:
        image, seed = render(0)
        return GateResult(Candidate(image, seed, None, NOTE_NO_REFERENCE), tries=1)
    best: Candidate | None = None
    tries = 0
    for attempt in range(max(1, max_tries)):
        image, seed = render(attempt)
        tries += 1
        face = embedder.embed(image)
        if face is None:
            candidate = Candidate(image, seed, None, NOTE_NO_FACE)
        else:
            score = similarity(reference, face, embedder.backend)
            note = NOTE_OK if score >= threshold else NOTE_BELOW
            candidate = Candidate(image, seed, score, note)
        if best is None or (candidate.score is not None and (best.score is None or candidate.score > best.score)):
            best = candidate
        if candidate.note == NOTE_OK:
            break
    assert best is not None
    return GateResult(best, tries)
