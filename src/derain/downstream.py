"""Deraining as preprocessing: does a detector find on the derained image what it finds on the clean photo?

Detections on the clean photo are the reference; those on the rainy or derained version are matched to them one to
one (same label, IoU >= 0.5, greedily from the largest overlap), giving recall (how much of what the detector saw
on the clean photo it still sees) and precision (how much of what it now reports was there on the clean photo).

The detectors are OpenCV's, whose weights ship inside the ``opencv-python-headless`` wheel, so everything runs
offline: the HOG people detector (Dalal & Triggs) and the Haar cascade for frontal faces (Viola & Jones).
``pip install "derain[downstream]"`` installs OpenCV (4.x: OpenCV 5 dropped both detectors).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from derain.errors import DerainError, InputError

LABELS = ("person", "face")
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels, ``(x0, y0)`` inclusive to ``(x1, y1)`` exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not overlap or either is empty)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def match(reference: Sequence[Box], found: Sequence[Box], *, threshold: float = IOU_THRESHOLD) -> int:
    """How many boxes of ``found`` match one of ``reference`` each, one to one: pairs of the same label with IoU
    >= ``threshold`` are taken from the largest IoU down, each box used at most once."""
    pairs = sorted(((iou(r, f), i, j) for i, r in enumerate(reference) for j, f in enumerate(found)
                    if r.label == f.label), reverse=True)
    used_r: set[int] = set()
    used_f: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i in used_r or j in used_f:
            continue
        used_r.add(i)
        used_f.add(j)
    return len(used_r)


@dataclass(frozen=True)
class Tally:
    """Counts summed over images: reference boxes, boxes found, and matches between them."""

    reference: int = 0
    found: int = 0
    matched: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.reference + other.reference, self.found + other.found, self.matched + other.matched)

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else float("nan")

    @property
    def precision(self) -> float:
        return self.matched / self.found if self.found else float("nan")


def tally(reference: Sequence[Box], found: Sequence[Box], *, label: str | None = None,
          threshold: float = IOU_THRESHOLD) -> Tally:
    """The counts of one image, for one label or (``None``) all of them."""
    if label is not None:
        reference = [b for b in reference if b.label == label]
        found = [b for b in found if b.label == label]
    return Tally(len(reference), len(found), match(reference, found, threshold=threshold))


def total(tallies: Iterable[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out = out + t
    return out


Detector = Callable[[np.ndarray], list[Box]]


def load_detector(*, people_min_score: float = 0.5, face_neighbours: int = 6) -> Detector:
    """OpenCV's HOG people detector and frontal-face Haar cascade as one function: ``uint8 (H, W, 3)`` RGB ->
    boxes labelled ``person`` or ``face``. People scoring below ``people_min_score`` (the SVM margin) are dropped;
    a face needs ``face_neighbours`` overlapping hits. Runs single-threaded, so results do not depend on the
    machine."""
    try:
        import cv2
    except ImportError:
        raise DerainError('the downstream detectors need OpenCV: pip install "derain[downstream]"') from None
    if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector") or not hasattr(cv2, "data"):
        raise DerainError(f"OpenCV {cv2.__version__} has no HOG people detector or bundled Haar cascades "
                          '(OpenCV 5 dropped them): pip install "opencv-python-headless<5"')
    cv2.setNumThreads(1)
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    faces = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    if faces.empty():
        raise DerainError("OpenCV's frontal-face cascade could not be loaded from its package folder")

    def detect(image: np.ndarray) -> list[Box]:
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            raise InputError(f"the detector takes a uint8 (H, W, 3) RGB array, got "
                             f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
        image = np.ascontiguousarray(image)
        boxes = []
        rects, weights = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
        for (x, y, w, h), s in zip(np.reshape(rects, (-1, 4)), np.ravel(weights), strict=True):
            if s >= people_min_score:
                boxes.append(Box(float(x), float(y), float(x + w), float(y + h), "person", float(s)))
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        for x, y, w, h in np.reshape(faces.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=face_neighbours,
                                                            minSize=(20, 20)), (-1, 4)):
            boxes.append(Box(float(x), float(y), float(x + w), float(y + h), "face"))
        return boxes

    return detect
