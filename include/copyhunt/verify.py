"""Geometric verification: confirm a hash candidate with local features and RANSAC.

A candidate is a pair of windows with close hashes: window W_q of the found image and window W_r
of the reference (possibly mirrored, or the whole reference turned by quarter turns). Mapping W_r
onto W_q predicts where the whole reference lies in the found image and at what scale. The
verifier cuts that region out of the found image (with a margin), brings it to the reference's
scale and orientation, and matches ORB keypoints against the reference's keypoints, which were
computed once when the reference was indexed (``FeatureStore``). RANSAC then fits an affine map.

A match must pass both tests: enough inliers spread over the picture, and an affine map that
agrees with the hash prediction. Unrelated pictures sometimes find 20-50 "inliers" on repeated
textures, but never where the hashes said the picture would be. So the operating point is
reached with few features and one RANSAC per candidate, cheap enough to verify every candidate.
The map also gives the matched region in both images and how much of each it covers.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from copyhunt.lake import atomic_write_bytes

# Parallelism comes from processes (pools, Spark executors); OpenCV's own threads would only
# oversubscribe the cores, and single-threaded ORB keeps keypoint order deterministic.
cv2.setNumThreads(1)

FEATURES_VERSION = "orb400-v1"  # changes when the feature parameters below change
VERIFY_WORKING_SIZE = 400  # references are described at this long side
QUERY_VERIFY_SIZE = 640  # found images are decoded for verification at up to this long side
MAX_FEATURES = 400
MAX_REGION_PX = 480  # the cut-out region is resized to at most this long side
MAX_UPSCALE = 4.0  # a thumbnail is enlarged at most 4x to meet the reference's scale
REGION_MARGIN = 0.15  # of the predicted extent, on each side: the prediction is approximate
LOWE_RATIO = 0.85
RANSAC_REPROJ_PX = 5.0
MIN_MATCHES = 5
# The affine map may move the reference's corners by at most this fraction of its size away
# from where the hashes predicted them. Copies: 99% under 0.15 (robustness suite, calibration
# seed); geometry fitted to chance matches lands anywhere (other pictures: 0.29 at the least).
MAX_PREDICTION_ERROR = 0.25
# Inliers of a verified copy: 24 at the fewest in the suite, hundreds for most. Other pictures
# reach 150 on repeated textures, but at most 6 within 0.3 of the predicted position.
MIN_INLIERS = 16
# Inliers must span this fraction of the reference, not one patch. Tuning part of the held-out
# suite: a crop keeping 29% of a photo spans 0.029-0.036; of the 1,778 window pairs of its
# queries verified against 100k references, none of another picture passed the inlier and
# prediction tests, at any spread.
MIN_INLIER_SPREAD = 0.02

_ORB = None
_MATCHER = None


def _orb():
    global _ORB
    if _ORB is None:
        # Small patches and a low FAST threshold: thumbnails and collage cells need keypoints too.
        _ORB = cv2.ORB_create(nfeatures=MAX_FEATURES, scaleFactor=1.2, nlevels=8, edgeThreshold=15, patchSize=15, fastThreshold=10)
    return _ORB


def _matcher():
    global _MATCHER
    if _MATCHER is None:
        _MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING)
    return _MATCHER


@dataclass(frozen=True)
class Features:
    """ORB keypoints (x, y in pixels of an image of ``width`` x ``height``) and descriptors."""

    width: int
    height: int
    points: np.ndarray  # (n, 2) float32
    descriptors: np.ndarray  # (n, 32) uint8

    def to_bytes(self) -> bytes:
        n = len(self.points)
        header = struct.pack("<4sIII", b"CHF1", self.width, self.height, n)
        return header + self.points.astype("<f4").tobytes() + self.descriptors.astype(np.uint8).tobytes()

    @staticmethod
    def from_bytes(data: bytes) -> "Features":
        magic, width, height, n = struct.unpack_from("<4sIII", data)
        if magic != b"CHF1":
            raise ValueError("not a copyhunt features file")
        off = struct.calcsize("<4sIII")
        if len(data) != off + n * (8 + 32):
            raise ValueError(f"features file of {len(data)} bytes, {off + n * 40} expected for {n} keypoints")
        points = np.frombuffer(data, "<f4", n * 2, off).reshape(n, 2).astype(np.float32)
        descriptors = np.frombuffer(data, np.uint8, n * 32, off + n * 8).reshape(n, 32)
        return Features(width, height, points, descriptors)


def describe(gray: np.ndarray) -> Features:
    """ORB features of a grey image (histogram-equalised: brightness and contrast edits stay)."""
    h, w = gray.shape
    keypoints, descriptors = _orb().detectAndCompute(cv2.equalizeHist(np.ascontiguousarray(gray)), None)
    if descriptors is None or not keypoints:
        return Features(w, h, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    return Features(w, h, np.float32([k.pt for k in keypoints]), descriptors)


class FeatureStore:
    """Reference features, content-addressed by the reference's sha256: described once, at
    indexing time, and read by every verification that needs them."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, ref_sha256: str) -> Path:
        return self.root / FEATURES_VERSION / ref_sha256[:2] / f"{ref_sha256}.orb"

    def has(self, ref_sha256: str) -> bool:
        """Whether readable features are stored (a damaged file counts as none, so the next
        index build describes the reference again and replaces it)."""
        try:
            self.get(ref_sha256)
        except KeyError:
            return False
        return True

    def put(self, ref_sha256: str, features: Features) -> None:
        """Store the features, replacing any file there (callers ask ``has`` first)."""
        atomic_write_bytes(self.path(ref_sha256), features.to_bytes())

    def get(self, ref_sha256: str) -> Features:
        """The stored features; KeyError when there are none, or none that can be read (a
        truncated or damaged file): the caller describes the reference again from its image."""
        try:
            return Features.from_bytes(self.path(ref_sha256).read_bytes())
        except (FileNotFoundError, ValueError, struct.error):
            raise KeyError(ref_sha256) from None


def reference_features(gray_at_verify_size: np.ndarray) -> Features:
    return describe(gray_at_verify_size)


# ---- one candidate -------------------------------------------------------------------------------
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class HashCandidate:
    """A pair of windows with close hashes, as the index lookup proposes it: window
    ``query_box`` of the found image looks like ``ref_box`` of the reference (boxes relative
    0..1; ``ref_box`` in the registered, unmirrored reference)."""

    query_box: Box
    ref_box: Box
    mirrored: bool
    quarter_turns: int  # the copy is the reference turned clockwise this many times, then mirrored if ``mirrored``


@dataclass(frozen=True)
class Verification:
    ok: bool
    inliers: int
    matches: int
    prediction_error: float  # how far the fitted map is from the hash prediction (fraction of size)
    # Matched region, relative coordinates (x0, y0, x1, y1), in the found and the reference image.
    query_box: Box
    ref_box: Box
    query_overlap: float  # fraction of the found image covered by the reference
    ref_overlap: float  # fraction of the reference visible in the found image
    scale: float

    @staticmethod
    def failed(matches: int = 0, inliers: int = 0, error: float = 1.0) -> "Verification":
        return Verification(False, inliers, matches, error, (0, 0, 0, 0), (0, 0, 0, 0), 0.0, 0.0, 0.0)


def oriented(gray: np.ndarray, mirrored: bool, turns: int) -> np.ndarray:
    """The found image brought back to the reference's orientation.

    An entry (turns, mirrored) hashes the reference mirrored after turning it clockwise, so the
    copy is undone by mirroring, then turning counter-clockwise.
    """
    out = gray[:, ::-1] if mirrored else gray
    if turns:
        out = np.rot90(out, turns)
    return np.ascontiguousarray(out)


def _to_found(points: np.ndarray, width: int, height: int, mirrored: bool, turns: int) -> np.ndarray:
    """Map points of the oriented image (``oriented``) back to the found image as served."""
    p = points.astype(np.float64).copy()
    w, h = width, height  # size of the oriented image
    for _ in range(turns % 4):  # inverse of one counter-clockwise turn: a clockwise turn
        x, y = p[:, 0].copy(), p[:, 1].copy()
        p[:, 0], p[:, 1] = h - y, x
        w, h = h, w
    if mirrored:
        p[:, 0] = w - p[:, 0]
    return p


def verify_candidate(query: np.ndarray, reference: Features, candidate: HashCandidate) -> Verification:
    """Does the grey found image ``query`` show the reference where the hashes say it does?"""
    if len(reference.points) < 4:
        return Verification.failed()
    found_h, found_w = query.shape
    g = oriented(query, candidate.mirrored, candidate.quarter_turns)
    H, W = g.shape
    qx0, qy0, qx1, qy1 = candidate.query_box
    if candidate.mirrored:
        qx0, qx1 = 1 - qx1, 1 - qx0
    for _ in range(candidate.quarter_turns % 4):  # as ``oriented`` turns the image: counter-clockwise, (x, y) -> (y, 1 - x)
        qx0, qy0, qx1, qy1 = qy0, 1 - qx1, qy1, 1 - qx0
    rx0, ry0, rx1, ry1 = candidate.ref_box
    rw, rh = reference.width, reference.height
    if rx1 <= rx0 or ry1 <= ry0 or qx1 <= qx0 or qy1 <= qy0:
        return Verification.failed()
    # Predicted map, reference pixels -> oriented found-image pixels (per axis: stretch allowed).
    sx = (qx1 - qx0) * W / ((rx1 - rx0) * rw)
    sy = (qy1 - qy0) * H / ((ry1 - ry0) * rh)
    ex0, ey0 = qx0 * W - rx0 * rw * sx, qy0 * H - ry0 * rh * sy
    ex1, ey1 = ex0 + rw * sx, ey0 + rh * sy
    mx, my = REGION_MARGIN * (ex1 - ex0), REGION_MARGIN * (ey1 - ey0)
    cx0, cy0 = max(0, int(ex0 - mx)), max(0, int(ey0 - my))
    cx1, cy1 = min(W, int(math.ceil(ex1 + mx))), min(H, int(math.ceil(ey1 + my)))
    if cx1 - cx0 < 8 or cy1 - cy0 < 8:
        return Verification.failed()
    region = g[cy0:cy1, cx0:cx1]
    # Each axis back to the reference's scale (a copy squeezed into a collage cell or a frame of
    # another shape is stretched: ORB's keypoints do not survive that), within the limits.
    fx, fy = min(MAX_UPSCALE, 1.0 / sx), min(MAX_UPSCALE, 1.0 / sy)
    cap = min(1.0, MAX_REGION_PX / max(region.shape[1] * fx, region.shape[0] * fy))
    fx, fy = fx * cap, fy * cap
    size = (max(8, round(region.shape[1] * fx)), max(8, round(region.shape[0] * fy)))
    region = cv2.resize(region, size, interpolation=cv2.INTER_AREA if max(fx, fy) < 1 else cv2.INTER_LINEAR)
    kx, ky = size[0] / (cx1 - cx0), size[1] / (cy1 - cy0)
    found = describe(region)
    if len(found.points) < 4:
        return Verification.failed()
    pairs = _matcher().knnMatch(reference.descriptors, found.descriptors, k=2)
    good = [m for m, *rest in (p for p in pairs if p) if not rest or m.distance < LOWE_RATIO * rest[0].distance]
    if len(good) < MIN_MATCHES:
        return Verification.failed(len(good))
    src = reference.points[[m.queryIdx for m in good]]
    dst = found.points[[m.trainIdx for m in good]]
    cv2.setRNGSeed(1234)  # seeded RANSAC: the same pair verifies the same way every run
    matrix, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_REPROJ_PX, maxIters=2000, confidence=0.995)
    if matrix is None or mask is None:
        return Verification.failed(len(good))
    inliers = int(mask.sum())
    # Region pixels -> oriented found-image pixels.
    to_oriented = np.array([[1 / kx, 0, cx0], [0, 1 / ky, cy0]])
    fitted = _compose(to_oriented, matrix)
    predicted = np.array([[sx, 0, ex0], [0, sy, ey0]])
    corners = np.float64([[0, 0], [rw, 0], [rw, rh], [0, rh]])
    moved = corners @ fitted[:, :2].T + fitted[:, 2]
    expected = corners @ predicted[:, :2].T + predicted[:, 2]
    error = float(np.abs(moved - expected).max() / max(rw * sx, rh * sy))
    inlier_pts = src[mask.ravel().astype(bool)]
    spread = float(np.ptp(inlier_pts[:, 0]) * np.ptp(inlier_pts[:, 1]) / (rw * rh)) if inliers else 0.0
    scale = float(math.sqrt(abs(np.linalg.det(fitted[:, :2]))))
    if inliers < MIN_INLIERS or error > MAX_PREDICTION_ERROR or spread < MIN_INLIER_SPREAD:
        return Verification.failed(len(good), inliers, round(error, 4))

    # Regions: the reference's outline in the found image, and the found image's outline mapped
    # back into the reference (what of the reference is visible).
    found_pts = _to_found(moved, W, H, candidate.mirrored, candidate.quarter_turns)
    fx0, fy0 = np.clip(found_pts.min(axis=0), 0, [found_w, found_h])
    fx1, fy1 = np.clip(found_pts.max(axis=0), 0, [found_w, found_h])
    query_overlap = float((fx1 - fx0) * (fy1 - fy0) / (found_w * found_h))
    inverse = cv2.invertAffineTransform(fitted)
    back = np.float64([[0, 0], [W, 0], [W, H], [0, H]]) @ inverse[:, :2].T + inverse[:, 2]
    bx0, by0 = np.clip(back.min(axis=0), 0, [rw, rh])
    bx1, by1 = np.clip(back.max(axis=0), 0, [rw, rh])
    ref_overlap = float((bx1 - bx0) * (by1 - by0) / (rw * rh))
    return Verification(
        ok=True,
        inliers=inliers,
        matches=len(good),
        prediction_error=round(error, 4),
        query_box=(round(float(fx0) / found_w, 4), round(float(fy0) / found_h, 4), round(float(fx1) / found_w, 4), round(float(fy1) / found_h, 4)),
        ref_box=(round(float(bx0) / rw, 4), round(float(by0) / rh, 4), round(float(bx1) / rw, 4), round(float(by1) / rh, 4)),
        query_overlap=round(query_overlap, 4),
        ref_overlap=round(ref_overlap, 4),
        scale=round(scale, 4),
    )


def reference_in_tilt_view(reference: Features, tilt: float) -> tuple[Features, np.ndarray]:
    """The reference's features on its tilt view's canvas (``fingerprint.tilt_canvas``: the
    reference turned upright by ``tilt``), where its tilt-view windows' boxes are, and the 3x3
    map from the canvas's pixels to the reference's. ORB descriptors do not change with the
    turn; only the points move."""
    from copyhunt.fingerprint import tilt_canvas

    (vw, vh), to_ref = tilt_canvas(reference.width, reference.height, tilt)
    to_ref = np.vstack([to_ref, [0.0, 0.0, 1.0]])
    points = cv2.perspectiveTransform(reference.points.reshape(-1, 1, 2).astype(np.float64), np.linalg.inv(to_ref)).reshape(-1, 2)
    return Features(vw, vh, points.astype(np.float32), reference.descriptors), to_ref


def ref_box_from_view(v: Verification, to_ref: np.ndarray, view_size: tuple[int, int], ref_size: tuple[int, int]) -> Verification:
    """A verification made against the reference's tilt view, its reference region and overlap
    taken back onto the reference."""
    if not v.ok:
        return v
    vw, vh = view_size
    rw, rh = ref_size
    x0, y0, x1, y1 = v.ref_box
    corners = np.float64([[[x0 * vw, y0 * vh], [x1 * vw, y0 * vh], [x1 * vw, y1 * vh], [x0 * vw, y1 * vh]]])
    mapped = cv2.perspectiveTransform(corners, to_ref)[0]
    bx0, by0 = np.clip(mapped.min(axis=0), 0, [rw, rh])
    bx1, by1 = np.clip(mapped.max(axis=0), 0, [rw, rh])
    box = (round(float(bx0) / rw, 4), round(float(by0) / rh, 4), round(float(bx1) / rw, 4), round(float(by1) / rh, 4))
    overlap = round(min(1.0, v.ref_overlap * vw * vh / (rw * rh)), 4)
    return Verification(True, v.inliers, v.matches, v.prediction_error, v.query_box, box, v.query_overlap, overlap, v.scale)


def verify_in_view(view: np.ndarray, to_query: np.ndarray, query_shape: tuple[int, int], reference: Features,
                   candidate: HashCandidate) -> Verification:
    """``verify_candidate`` on a view of the found image (its picture warped upright off a plain
    background, or the whole image turned upright: ``fingerprint.found_image_view``), where the
    candidate's window was hashed, its box relative to the view; on the found image itself a
    turned or keystoned copy lies far from where the hashes predict. The regions are mapped back
    onto the found image through ``to_query`` (3x3, view pixels to found-image pixels)."""
    v = verify_candidate(view, reference, candidate)
    if not v.ok:
        return v
    vh, vw = view.shape
    qh, qw = query_shape
    x0, y0, x1, y1 = v.query_box
    corners = np.float32([[[x0 * vw, y0 * vh], [x1 * vw, y0 * vh], [x1 * vw, y1 * vh], [x0 * vw, y1 * vh]]])
    mapped = cv2.perspectiveTransform(corners, np.asarray(to_query, np.float64))[0]
    fx0, fy0 = np.clip(mapped.min(axis=0), 0, [qw, qh])
    fx1, fy1 = np.clip(mapped.max(axis=0), 0, [qw, qh])
    box = (round(float(fx0) / qw, 4), round(float(fy0) / qh, 4), round(float(fx1) / qw, 4), round(float(fy1) / qh, 4))
    overlap = round(min(1.0, float(cv2.contourArea(mapped)) / (qw * qh)), 4)
    return Verification(True, v.inliers, v.matches, v.prediction_error, box, v.ref_box, overlap, v.ref_overlap, v.scale)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine map x -> outer(inner(x))."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2]


# ---- score ----------------------------------------------------------------------------------------
# P(copy | evidence), a logistic model of two features: the hash distance of the window pair, and
# log(1 + inliers * max(0, 1 - prediction_error / SUPPORT_ERROR_SCALE)), the inliers discounted as
# the fitted map strays from where the hashes put the picture (chance matches on textures can
# reach 150 inliers, but never where the hashes said). Fitted by ``copyhunt bench robustness
# --fit`` (L2 penalty 1) on every window pair within 16 bits of the robustness suite built with
# CALIBRATION_SEED = 7, which is not the seed of the published figures, its found images hashed
# with the paste proposals: 1224 pairs of copies (126 of them paste windows), 1386 of other
# pictures. Verified copies score 0.930 or more; no other pair above 0.206.
SCORE_INTERCEPT = -3.101
SCORE_LOG_SUPPORT = 2.372
SCORE_DISTANCE = -0.08
SUPPORT_ERROR_SCALE = 0.5
# The default operating point: a verified match is reported when its score reaches this.
DEFAULT_MIN_SCORE = 0.5


def score_support(inliers: float, prediction_error: float) -> float:
    return math.log1p(max(0.0, inliers) * max(0.0, 1.0 - prediction_error / SUPPORT_ERROR_SCALE))


def similarity_score(distance: int, inliers: int, prediction_error: float = 0.0) -> float:
    """Calibrated probability, in [0, 1], that the pair is a copy."""
    z = SCORE_INTERCEPT + SCORE_LOG_SUPPORT * score_support(inliers, prediction_error) + SCORE_DISTANCE * distance
    return round(1.0 / (1.0 + math.exp(-z)), 4)
