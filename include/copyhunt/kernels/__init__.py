"""Compiled (numba) kernels behind the fingerprint: the loops over pixels, kept apart from the method.

``copyhunt.fingerprint`` and ``copyhunt.proposals`` say what is computed and why; these modules
compute it fast, bit for bit as the tests hold them (tests/test_kernels.py, test_proposals.py,
test_fingerprint_index.py):

* ``pixels``: kernels more than one of the others call (``half_size_u8``);
* ``hashes``: the window hash's cell means and median bits, and the collage seam strengths;
* ``blurs``: the Gaussian blur of the blob search (any symmetric kernel, OpenCV's borders);
* ``blobs``: the difference-of-Gaussians blob search, and the blob parameters it compiles in.
* ``proposals``: the pasted-picture rectangle search, and the parameters it compiles in.

numba caches compiled kernels in ``__pycache__`` beside these files; ``fingerprint.compile_kernels``
compiles or loads them all before a process pool forks.
"""
