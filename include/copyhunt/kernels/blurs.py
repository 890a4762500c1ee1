"""Compiled (numba) Gaussian blurs for the blob search, bit for bit the same for every radius.

``blur_any_radius`` blurs with any symmetric kernel. ``compile_blurs(radii)`` returns ``_blur``,
a dispatcher that runs, for each radius in ``radii``, a version with the taps written out
(generated below from ``_UNROLLED_BLUR``) and ``blur_any_radius`` for any other radius. The
written-out versions make the same additions in the same order, so they give the same bits
(tests/test_fingerprint_index.py holds them to it).
"""

from __future__ import annotations
from typing import Iterable

import numpy as np
from numba import njit

@njit(cache=True, nogil=True)
def _reflect101(i: int, n: int) -> int:
    """Where index ``i`` of a line of ``n`` reads, reflected at the ends without repeating them
    (OpenCV's default border: ...2 1 | 0 1 2 ... n-1 | n-2...), however far outside."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return period - i if i >= n else i


@njit(cache=True, nogil=True)
def _border_tables(h: int, w: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """A blur's reflected borders (``_reflect101``) for radius ``r`` on an h x w image:
    ``reflected[y + r]``, the row that row y (-r..h + r - 1) reads; and ``ends``, the columns
    a padded row's r reflected cells on the left, then the r on the right, copy (the same for
    every row)."""
    reflected = np.empty(h + 2 * r, np.int64)
    for y in range(-r, h + r):
        reflected[y + r] = _reflect101(y, h)
    ends = np.empty(2 * r, np.int64)
    for i in range(r):
        ends[i], ends[r + i] = _reflect101(-r + i, w), _reflect101(w + i, w)
    return reflected, ends


@njit(cache=True, nogil=True)
def blur_any_radius(src: np.ndarray, dst: np.ndarray, half_kernel: np.ndarray, rows: np.ndarray, line: np.ndarray) -> None:
    """``dst``: ``src`` (float32, h x w) blurred by the symmetric kernel whose right half (centre
    first) is ``half_kernel``, rows then columns, borders as OpenCV's default (``_reflect101``):
    within float rounding (1e-4) of ``cv2.GaussianBlur`` with the same kernel. ``rows`` (h x w)
    and ``line`` (w + 2 x radius or more) are scratch space. ``_blur`` runs the radii the blob
    search uses with their taps written out; this is the others', and the reference the written
    out ones are tested against, bit for bit.

    Each output line adds up mirrored pairs of taps, two pairs at a time, as whole-line slices
    (loops LLVM vectorises). Not fastmath: fused multiply-adds would round differently with the
    CPU and with numba's bounds checking, and fingerprints must not depend on either. The two
    passes are written out alike, though they differ only in where a tap's line comes from: a
    shared helper over a strided view of the padded line (numba's any-layout arrays) does not
    vectorise, and helpers for the inner loops, even inlined, keep the sum from staying in
    registers; both are slower than the loops written out here, for the same bits."""
    h, w = src.shape
    r = len(half_kernel) - 1
    k = half_kernel
    reflected, ends = _border_tables(h, w, r)
    for y in range(h):  # along rows, from a copy of the row with its reflected ends
        row = src[y]
        centre = line[r:r + w]
        for x in range(w):
            centre[x] = row[x]
        for i in range(r):
            line[i], line[r + w + i] = row[ends[i]], row[ends[r + i]]
        out = rows[y]
        j = 1
        if r % 2:
            a, b = line[r - 1:r - 1 + w], line[r + 1:r + 1 + w]
            for x in range(w):
                out[x] = k[0] * centre[x] + k[1] * (a[x] + b[x])
            j = 2
        else:
            for x in range(w):
                out[x] = k[0] * centre[x]
        while j < r:
            a, b, c, d = line[r - j:r - j + w], line[r + j:r + j + w], line[r - j - 1:r - j - 1 + w], line[r + j + 1:r + j + 1 + w]
            for x in range(w):
                out[x] += k[j] * (a[x] + b[x]) + k[j + 1] * (c[x] + d[x])
            j += 2
    for y in range(h):  # along columns: whole rows of the first pass
        centre, out = rows[y], dst[y]
        j = 1
        if r % 2:
            a, b = rows[reflected[y + r - 1]], rows[reflected[y + r + 1]]
            for x in range(w):
                out[x] = k[0] * centre[x] + k[1] * (a[x] + b[x])
            j = 2
        else:
            for x in range(w):
                out[x] = k[0] * centre[x]
        while j < r:
            a, b = rows[reflected[y + r - j]], rows[reflected[y + r + j]]
            c, d = rows[reflected[y + r - j - 1]], rows[reflected[y + r + j + 1]]
            for x in range(w):
                out[x] += k[j] * (a[x] + b[x]) + k[j + 1] * (c[x] + d[x])
            j += 2


# ``_blur`` for one radius with its taps written out: each output pixel is one expression over
# the lines its taps read, so the sum stays in a register instead of going back to the output
# line after every two pairs of taps (a loop over taps cannot do that: its trip count is not a
# constant, and the sum's order may not change); and the column pass makes two output rows at a
# time, which read all but two of their lines alike, each loaded once. The same additions in the
# same order as ``blur_any_radius``, so the same bits in less time; worth it for the few radii
# the blob search blurs with, over and over. Generated from this template and compiled under
# this file's name, so that numba caches them. The row's copy between its reflected ends is written
# here as in ``blur_any_radius``, not in a helper: a call for each row costs more than the copy.
_UNROLLED_BLUR = """
def _blur_r{r}(src, dst, half_kernel, rows, line):
    h, w = src.shape
    r = {r}
{taps}
    reflected, ends = _border_tables(h, w, r)
    for y in range(h):
        row = src[y]
        centre = line[r:r + w]
        for x in range(w):
            centre[x] = row[x]
        for i in range(r):
            line[i], line[r + w + i] = row[ends[i]], row[ends[r + i]]
{row_lines}
        out = rows[y]
        for x in range(w):
            out[x] = {total}
    for y in range(0, h - 1, 2):
{pair_lines}
        out, next_out = dst[y], dst[y + 1]
        for x in range(w):
            value, next_value = {total}, {next_total}
            out[x], next_out[x] = value, next_value
    if h % 2:
        y = h - 1
{column_lines}
        out = dst[y]
        for x in range(w):
            out[x] = {total}
"""


def _unrolled_blur_source(radius: int) -> str:
    """``_UNROLLED_BLUR`` for ``radius``: ``at<k>`` is the line k taps ahead of the output's own
    (``at_<k>`` k taps back), ``k<j>`` the kernel's taps, summed as ``blur_any_radius`` sums
    them; the second row of a pair reads its lines one further on."""
    def line(k: int) -> str:
        return f"at{k}" if k >= 0 else f"at_{-k}"

    def total(shift: int) -> str:
        def pair(j: int) -> str:
            return f"k{j} * ({line(shift - j)}[x] + {line(shift + j)}[x])"

        if radius % 2:
            expr, j = f"k0 * {line(shift)}[x] + {pair(1)}", 2
        else:
            expr, j = f"k0 * {line(shift)}[x]", 1
        while j < radius:
            expr, j = f"({expr}) + ({pair(j)} + {pair(j + 1)})", j + 2
        return expr

    indent = " " * 8
    return _UNROLLED_BLUR.format(
        r=radius,
        taps="\n".join(f"    k{j} = half_kernel[{j}]" for j in range(radius + 1)),
        row_lines="\n".join(f"{indent}{line(k)} = line[{radius + k}:{radius + k} + w]" for k in range(-radius, radius + 1)),
        pair_lines="\n".join(f"{indent}{line(k)} = rows[reflected[y + {radius + k}]]" for k in range(-radius, radius + 2)),
        column_lines="\n".join(f"{indent}{line(k)} = rows[reflected[y + {radius + k}]]" for k in range(-radius, radius + 1)),
        total=total(0), next_total=total(1))


def compile_blurs(radii: Iterable[int]):
    """``_blur``: a compiled dispatcher to ``_blur_r<radius>`` for each of ``radii``, and to
    ``blur_any_radius`` for any other.

    The generated functions are defined in this module's own namespace, as if written here, and
    nowhere else: numba caches a function by the file it comes from and loads it back by its
    module's name, and the template is in this file, so a change to it is seen. Called once, by
    ``copyhunt.kernels.blobs`` at import, with the radii the blob search uses."""
    dispatcher = ["def _blur(src, dst, half_kernel, rows, line):", "    r = len(half_kernel) - 1"]
    for r in sorted(set(radii)):
        exec(compile(_unrolled_blur_source(r), __file__, "exec"), globals())
        globals()[f"_blur_r{r}"] = njit(cache=True, nogil=True)(globals()[f"_blur_r{r}"])
        dispatcher += [f"    if r == {r}:", f"        return _blur_r{r}(src, dst, half_kernel, rows, line)"]
    dispatcher.append("    return blur_any_radius(src, dst, half_kernel, rows, line)")
    exec(compile("\n".join(dispatcher) + "\n", __file__, "exec"), globals())
    return njit(cache=True, nogil=True)(globals()["_blur"])
