"""Geometric verification: confirm a hash candidate with local features and RANSAC.

Two images show the same photo when many local features (SIFT) match under one geometric
transform. RANSAC finds that transform (a partial affine map: scale, rotation, translation), and
the inliers tell how strong the evidence is. The transform also maps the reference's outline into
the found image, which gives the matched region in both images and how much of each it covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

MIN_INLIERS = 16  # unrelated photos reach ~18 agreeing keypoints at worst, clustered on one spot
MIN_INLIER_SPREAD = 0.04  # inliers must span this fraction of the reference, not one texture patch
MIN_INLIER_RATIO = 0.2
LOWE_RATIO = 0.8
RANSAC_REPROJ_PX = 6.0
MAX_FEATURES = 1500


@dataclass(frozen=True)
class Verification:
    ok: bool
    inliers: int
    matches: int
    # Matched region, relative coordinates (x0, y0, x1, y1), in the found and the reference image.
    query_box: tuple[float, float, float, float]
    ref_box: tuple[float, float, float, float]
    query_overlap: float  # fraction of the found image covered by the reference
    ref_overlap: float  # fraction of the reference visible in the found image
    scale: float

    @staticmethod
    def failed(matches: int = 0, inliers: int = 0) -> "Verification":
        return Verification(False, inliers, matches, (0, 0, 0, 0), (0, 0, 0, 0), 0.0, 0.0, 0.0)


_SIFT = None


def _sift():
    global _SIFT
    if _SIFT is None:
        _SIFT = cv2.SIFT_create(nfeatures=MAX_FEATURES)
    return _SIFT


def _features(image: Image.Image):
    gray = np.asarray(ImageOps.grayscale(image))
    # Equalise so brightness and contrast edits do not starve the detector.
    gray = cv2.equalizeHist(gray)
    return _sift().detectAndCompute(gray, None)


def verify_pair(query: Image.Image, reference: Image.Image, mirrored: bool = False) -> Verification:
    """Does ``query`` contain ``reference`` (possibly mirrored, cropped, scaled, recoloured)?"""
    ref = ImageOps.mirror(reference) if mirrored else reference
    kq, dq = _features(query)
    kr, dr = _features(ref)
    if dq is None or dr is None or len(kq) < 4 or len(kr) < 4:
        return Verification.failed()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(dr, dq, k=2)
    good = [m for m, *rest in (p for p in pairs if p) if not rest or m.distance < LOWE_RATIO * rest[0].distance]
    if len(good) < MIN_INLIERS:
        return Verification.failed(len(good))
    src = np.float32([kr[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    dst = np.float32([kq[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    # Seeded RANSAC keeps verification deterministic run to run.
    cv2.setRNGSeed(1234)
    matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_REPROJ_PX, maxIters=4000, confidence=0.995)
    if matrix is None or mask is None:
        return Verification.failed(len(good))
    inliers = int(mask.sum())
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if inliers < MIN_INLIERS or inliers < MIN_INLIER_RATIO * len(good) or not (0.05 < scale < 20):
        return Verification.failed(len(good), inliers)
    inlier_pts = src.reshape(-1, 2)[mask.ravel().astype(bool)]
    spread = np.ptp(inlier_pts[:, 0]) * np.ptp(inlier_pts[:, 1]) / float(ref.size[0] * ref.size[1])
    if spread < MIN_INLIER_SPREAD:
        return Verification.failed(len(good), inliers)

    qw, qh = query.size
    rw, rh = ref.size
    corners = np.float32([[0, 0], [rw, 0], [rw, rh], [0, rh]]).reshape(-1, 1, 2)
    projected = cv2.transform(corners, matrix).reshape(-1, 2)
    qx0, qy0 = np.clip(projected.min(axis=0), 0, [qw, qh])
    qx1, qy1 = np.clip(projected.max(axis=0), 0, [qw, qh])
    query_overlap = float((qx1 - qx0) * (qy1 - qy0) / (qw * qh))
    # The part of the reference that is visible: the found image's outline mapped back.
    inverse = cv2.invertAffineTransform(matrix)
    qcorners = np.float32([[0, 0], [qw, 0], [qw, qh], [0, qh]]).reshape(-1, 1, 2)
    back = cv2.transform(qcorners, inverse).reshape(-1, 2)
    rx0, ry0 = np.clip(back.min(axis=0), 0, [rw, rh])
    rx1, ry1 = np.clip(back.max(axis=0), 0, [rw, rh])
    ref_overlap = float((rx1 - rx0) * (ry1 - ry0) / (rw * rh))
    if mirrored:  # report the region in the registered (unmirrored) reference's coordinates
        rx0, rx1 = rw - rx1, rw - rx0
    return Verification(
        ok=True,
        inliers=inliers,
        matches=len(good),
        query_box=(round(float(qx0) / qw, 4), round(float(qy0) / qh, 4), round(float(qx1) / qw, 4), round(float(qy1) / qh, 4)),
        ref_box=(round(float(rx0) / rw, 4), round(float(ry0) / rh, 4), round(float(rx1) / rw, 4), round(float(ry1) / rh, 4)),
        query_overlap=round(query_overlap, 4),
        ref_overlap=round(ref_overlap, 4),
        scale=round(scale, 4),
    )


def similarity_score(distance: int, inliers: int) -> float:
    """A score in [0, 1] from the best hash distance and the verified inliers.

    Provisional shape (calibrated against labelled pairs in the matching-engine work): inliers
    saturate at 60, a hash distance of 0 adds full confidence and 16+ bits adds none.
    """
    feature = min(1.0, inliers / 60.0)
    hashed = max(0.0, 1.0 - distance / 16.0)
    return round(0.7 * feature + 0.3 * hashed, 4)
