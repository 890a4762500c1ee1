"""Blob writes in a helper process, so that the crawler processes run no threads.

Each crawler process (the page crawler, the image fetcher) hashes a blob itself (the rows need
the sha256 at once) and hands the bytes to its own writer process,
``python -m copyhunt.crawl.blobwriter BLOB_ROOT``, over a pipe: a frame is the line
``<sha256 hex> <length>`` followed by the bytes. The writer stores each blob with
:meth:`copyhunt.blobs.LocalBlobStore.put` (temp file, fsync, rename) on a few threads, since the
wait is the disk's, and exits once its input has ended and every write is done. The crawler then
checks that every blob it sent is in the store: one that is not (a failed write, a writer that
died) is reported, and its rows lose their sha256, so no row points at a missing blob.

Why a process rather than threads: threads share the crawler's GIL. Each time the event loop
releases the GIL for a system call (every socket read and write, every lxml parse), a writer
thread takes it, and on a busy machine a writer descheduled while holding it stalls the crawl:
page parsing, which needs the GIL throughout, waits on the writers.

If the writer cannot be started, or dies, the rest of the blobs are written in the crawler itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from copyhunt.blobs import LocalBlobStore, sha256_bytes

logger = logging.getLogger(__name__)

WRITER_THREADS = 4  # disk latency, not CPU: a few writes in flight hide fsync's wait
MAX_PENDING = 256  # in the writer: blobs read ahead of the disk (the pipe holds the rest)
PIPE_BUFFER = 1024 * 1024  # Linux's default limit for an unprivileged pipe: about a second of blobs
# Frames are sent in batches: every write to the pipe wakes the writer process, and on a busy
# machine the crawler was paying for that wake-up on each blob.
FLUSH_BYTES = 128 * 1024
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, missing from Python's fcntl module on some builds
MAX_FRAME = 1 << 31  # no blob is this large (images are capped at COPYHUNT_MAX_IMAGE_BYTES)


class BlobWriter:
    """Stores blobs through a writer process; each distinct blob once.

    ``put`` returns the sha256 at once; ``close`` waits for the writer and returns the blobs that
    did not reach the store (sha256 -> reason).
    """

    def __init__(self, store: LocalBlobStore, *, in_process: bool = False):
        self.store = store
        self._sent: set[str] = set()
        self._failed: dict[str, str] = {}
        self._buffer: list[bytes] = []  # frames not yet written to the pipe
        self._buffered = 0
        self._proc: subprocess.Popen[bytes] | None = None
        if not in_process:
            cmd = [sys.executable, "-m", "copyhunt.crawl.blobwriter", str(store.root)]
            try:
                self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, bufsize=0)
            except OSError as exc:
                logger.error("could not start the blob writer (%s); writing blobs in this process", exc)
            else:
                grow_pipe(self._proc.stdin.fileno(), PIPE_BUFFER)  # type: ignore[union-attr]

    def put(self, data: bytes) -> str:
        """The blob's sha256; the write happens in the writer process (see :meth:`close`)."""
        digest = sha256_bytes(data)
        if digest in self._sent:
            return digest
        self._sent.add(digest)
        if self._proc is not None:
            self._buffer += [b"%s %d\n" % (digest.encode(), len(data)), data]
            self._buffered += len(data)
            if self._buffered >= FLUSH_BYTES:
                self._flush()
            return digest
        self._put_here(digest, data)
        return digest

    def _put_here(self, digest: str, data: bytes) -> None:
        try:
            self.store.put(data)
        except Exception as exc:  # noqa: BLE001 - a blob that cannot be stored is reported, not fatal
            self._failed[digest] = f"{type(exc).__name__}: {exc}"

    def _flush(self) -> None:
        frames, self._buffer, self._buffered = self._buffer, [], 0
        if not frames:
            return
        if self._proc is not None:
            try:
                _write_all(self._proc.stdin, b"".join(frames))  # type: ignore[arg-type]
                return
            except OSError as exc:  # the writer died: what it had stored is checked at close
                logger.error("the blob writer exited early (%s); writing the rest in this process", exc)
                self._stop_writer()
        for header, data in zip(frames[::2], frames[1::2]):
            self._put_here(header.split(b" ", 1)[0].decode(), data)

    def _stop_writer(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        return proc.wait()

    def close(self) -> dict[str, str]:
        """Wait for every write; returns the blobs not in the store (sha256 -> reason)."""
        self._flush()
        code = self._stop_writer()
        for digest in self._sent:
            if digest not in self._failed and not self.store.exists(digest):
                self._failed[digest] = f"not in the blob store after the blob writer finished (exit status {code})"
        return dict(self._failed)


def grow_pipe(fd: int, size: int) -> None:
    """Ask for a pipe buffer of ``size`` bytes (Linux). Where that is not possible (another OS,
    a limit) the pipe keeps its size: writers then only block, or overflow, sooner."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass


def _write_all(pipe: object, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = pipe.write(view)  # type: ignore[attr-defined]
        view = view[n:]


# ---- the writer process ----------------------------------------------------------------------------
def serve(root: Path, stream: object) -> int:
    """Store every frame read from ``stream`` in ``LocalBlobStore(root)``; 0 if all were stored."""
    store = LocalBlobStore(root)
    slots = threading.BoundedSemaphore(MAX_PENDING)
    failures = 0

    def write(expected: str, data: bytes) -> None:
        nonlocal failures
        try:
            got = store.put(data)
            if got != expected:  # a damaged frame; the crawler finds its blob missing
                raise ValueError(f"frame for {expected} holds {got}")
        except Exception as exc:  # noqa: BLE001 - report and go on with the next blob
            failures += 1
            logger.error("blob %s not stored: %s: %s", expected, type(exc).__name__, exc)
        finally:
            slots.release()

    with ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="blob-writer") as pool:
        while header := stream.readline():  # type: ignore[attr-defined]
            digest, _, size = header.decode("ascii", "replace").strip().partition(" ")
            if not size.isdigit() or int(size) >= MAX_FRAME:
                logger.error("bad frame header %r; stopping", header[:100])
                return 1
            data = stream.read(int(size))  # type: ignore[attr-defined]
            if len(data) != int(size):
                logger.error("input ended inside blob %s; stopping", digest)
                return 1
            slots.acquire()
            pool.submit(write, digest, data)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m copyhunt.crawl.blobwriter BLOB_ROOT  (frames on stdin)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [blobwriter] %(levelname)s: %(message)s")
    return serve(Path(argv[0]), sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main())
