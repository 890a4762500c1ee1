"""Region proposals in found images: where a picture was pasted into another one.

A registered photo pasted small into an unrelated photo (an inset, a thumbnail in a banner) fills
a fraction of the found image, so neither the whole-image hash nor most of the found image's blob
windows describe it. But its outline is easy to see: a rectangle whose four straight sides are
steps in brightness (the pasted pixels have nothing to do with the background next to them), and
those steps stop at its corners. Hashing exactly that rectangle gives the whole registered
picture's hash within a few bits, at any position and scale; a box a few percent off does not
(5% in from each side costs 8-12 bits), so boxes are placed to the pixel.

How, on the grey working image:

1. the step across every pixel boundary, horizontal and vertical, capped so that any clear step
   counts fully (``STEP_CAP``), with prefix sums along both axes: the mean step along any
   straight segment then costs two lookups;
2. corners of each kind (top-left, top-right, ...), found on the half-size image and placed on
   the working one: both sides leave the corner over short, long and longer arms (a pasted
   picture's sides are long, a facade's window frames are not), and neither goes on past it; the
   strongest few of each kind are kept;
3. rectangles from opposite corners, from two adjacent corners plus a fourth side wherever the
   step along it peaks (it may be too faint to make corners: sky pasted on a pale wall), and
   from one corner and the image's edges (a picture in a corner of the page);
4. each rectangle is scored by the evidence along its sides: the mean step along the side, less
   half the stronger of the two parallel lines 3 px away (a boundary is a ridge; in a striped or
   diagonal texture every line steps alike), above a baseline, times the side's length, less the
   steps along its continuations past the corners; all times the square root of how good its
   inner corners are. One side may be faint; a side on the image's edge is not counted; at least
   three must be inside, or two clear ones meeting at a corner. Rectangles scoring under
   0.05 x (width + height) are dropped, which leaves most photos with no proposal at all, unless
   they score at least 0.035 x that and 0.12 x their own width + height (a wide picture's sides
   are short for its width: a 2.8:1 panorama pasted at 40% scores 0.04-0.046 x the image's);
5. the best ones, each side nudged by a pixel to its strongest position, without near-duplicates;
   and the best one again with each side in turn moved to its best other position: the top
   rectangle often has three of the picture's sides and the fourth on a line of the background
   or of the picture (a horizon, a facade's floor) that scores about as well.

Natural rectangles (windows, screens, book covers) are proposed too; they cost a window hash
each and match nothing, since verification decides. Pictures pasted on a background of many
rectangles (a facade of windows, shelves) are the ones still missed.
"""

from __future__ import annotations

import numpy as np

from copyhunt.kernels.proposals import find_paste_boxes

# Scores are in pixels of side evidence, as fractions of the image's width + height (the other
# parameters, compiled into the kernels, are in copyhunt.kernels.proposals):
MIN_SCORE_DENSE = 0.035  # under MIN_SCORE, a rectangle scoring this and DENSE_EVIDENCE x its own width + height is kept
DENSE_EVIDENCE = 0.12  # potd-image8 pasted (panorama, 2.8:1) scores 0.040-0.046 x the image's w + h but 0.13-0.15 x its own

Box = tuple[int, int, int, int]


def paste_boxes(gray: np.ndarray, count: int, min_side: int) -> list[Box]:
    """Pixel boxes (x0, y0, x1, y1) that look like pasted pictures at least ``min_side`` px on a
    side: up to ``count`` rectangles, best first, then up to four placements of the best one with
    a side moved."""
    h, w = gray.shape
    if count <= 0 or min(h, w) < 2 * min_side:
        return []
    chosen = find_paste_boxes(np.ascontiguousarray(gray, np.uint8), count, min_side, MIN_SCORE_DENSE * (w + h),
                              DENSE_EVIDENCE)  # read at call time: tests vary it
    return [tuple(box) for box in chosen.tolist()]
