import io
import struct
import zlib

import pytest
from PIL import Image, ImageOps

from conftest import CUSTOMER_IMAGES, IMAGES
from copyhunt.imaging import BadImage, load_normalised, load_normalised_with_box, probe, sniff_format

MODES = ["1", "L", "LA", "P", "PA", "I", "F", "CMYK", "YCbCr", "RGBA", "I;16"]


def encode(im, fmt="PNG", **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width, height):
    """A PNG whose header claims width x height: a decompression bomb if decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_type_comes_from_magic_bytes_not_names():
    assert sniff_format(CUSTOMER_IMAGES[0].read_bytes()) == "JPEG"
    assert sniff_format((IMAGES / "threatexchange-misc-pen-and-coaster.png").read_bytes()) == "PNG"
    assert sniff_format(b"<!doctype html><html>") is None
    with pytest.raises(BadImage) as err:
        load_normalised(b"<html><body>not an image</body></html>")
    assert err.value.reason == "not-an-image"


def test_corrupt_and_truncated_images_raise_bad_image():
    data = CUSTOMER_IMAGES[0].read_bytes()
    with pytest.raises(BadImage) as err:
        load_normalised(data[:200])
    assert err.value.reason == "corrupt-image"


def test_decompression_bomb_refused_before_decoding():
    bomb = png_header_only(40000, 40000)
    with pytest.raises(BadImage) as err:
        probe(bomb, max_pixels=64_000_000)
    assert err.value.reason == "decompression-bomb"
    with pytest.raises(BadImage):
        load_normalised(bomb, max_pixels=64_000_000)


@pytest.mark.parametrize("mode", MODES)
def test_every_colour_mode_becomes_rgb(mode):
    src = Image.open(CUSTOMER_IMAGES[1]).convert("RGB")
    im = src.convert(mode) if mode != "I;16" else src.convert("L").convert("I;16")
    fmt = "TIFF" if mode in ("F", "I", "CMYK", "YCbCr", "I;16") else "WEBP" if mode == "PA" else "PNG"
    out = load_normalised(encode(im, fmt))
    assert out.mode == "RGB" and out.size[0] > 100


def test_exif_orientation_applied():
    src = Image.open(CUSTOMER_IMAGES[0]).convert("RGB")
    rotated = src.rotate(90, expand=True)  # stored sideways, EXIF says "rotate back"
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(rotated, "JPEG", exif=exif.tobytes(), quality=95)
    out = load_normalised(data, trim=False)
    assert out.size == src.size


def test_padding_is_trimmed_and_reported():
    src = Image.open(CUSTOMER_IMAGES[0]).convert("RGB")
    padded = ImageOps.expand(src, border=(30, 20, 30, 20), fill="white")
    out, box = load_normalised_with_box(encode(padded))
    assert abs(out.size[0] - src.size[0]) <= 2 and abs(out.size[1] - src.size[1]) <= 2
    assert box[0] == pytest.approx(30 / padded.size[0], abs=0.01)


def test_large_jpeg_decoded_at_working_size():
    big = Image.open(IMAGES / "bridge" / "bridge-1-original.jpg")
    out = load_normalised((IMAGES / "bridge" / "bridge-1-original.jpg").read_bytes(), working_size=512)
    assert max(out.size) <= 512 and big.size[0] == 1600
