import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import CUSTOMER_IMAGES, IMAGES
from copyhunt.fingerprint import PHasher, hamming
from copyhunt.imaging import BadImage, half_size, load_gray, load_normalised, load_normalised_with_box, probe, sniff_format

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


# ---- the grey fast path used by fingerprints and verification ------------------------------------

def gray_hash(gray):
    h, w = gray.shape
    return int(PHasher().hash_windows(gray, np.array([[0, 0, w, h]]))[0][0])


@pytest.mark.parametrize("name,portrait", [("exif-rotn-1.jpg", False), ("exif-rotn-3.jpg", False), ("exif-rotn-6.jpg", True), ("exif-rotn-8.jpg", True)])
def test_every_exif_orientation_is_applied(name, portrait):
    path = IMAGES / "exif-rotn" / name
    raw = Image.open(path)
    assert raw.size == (1008, 756)  # stored sideways or upside down; the tag says how to show it
    gray, box = load_gray(path.read_bytes(), working_size=400, trim=False)
    assert (gray.shape[0] > gray.shape[1]) == portrait
    upright = ImageOps.exif_transpose(raw).convert("L").resize((gray.shape[1], gray.shape[0]))
    assert hamming(gray_hash(gray), gray_hash(np.asarray(upright))) <= 4


def test_every_colour_mode_and_format_of_one_photo_looks_the_same():
    folder = IMAGES / "modes"
    original = gray_hash(load_gray((folder / "original.jpg").read_bytes(), working_size=320)[0])
    for path in sorted(folder.iterdir()):
        gray, _ = load_gray(path.read_bytes(), working_size=320)
        assert gray.dtype == np.uint8 and gray.shape[1] == 320 and abs(gray.shape[0] - 201) <= 4, path.name
        assert hamming(gray_hash(gray), original) <= 8, path.name


def test_sixteen_bit_palette_and_alpha_images_load():
    src = Image.open(CUSTOMER_IMAGES[1]).convert("RGB")
    base = gray_hash(load_gray(encode(src, "PNG"), working_size=320)[0])
    sixteen = src.convert("L").convert("I;16")
    palette = src.convert("P", palette=Image.Palette.ADAPTIVE)
    alpha = src.convert("RGBA")
    alpha.putalpha(255)
    for im, fmt in ((sixteen, "PNG"), (palette, "GIF"), (alpha, "PNG"), (src.convert("CMYK"), "JPEG")):
        gray, _ = load_gray(encode(im, fmt), working_size=320)
        assert hamming(gray_hash(gray), base) <= 10, im.mode


def test_animated_gif_uses_its_first_frame():
    first = Image.open(CUSTOMER_IMAGES[2]).convert("RGB").resize((240, 160))
    second = Image.open(CUSTOMER_IMAGES[5]).convert("RGB").resize((240, 160))
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    gray, _ = load_gray(buf.getvalue(), working_size=240)
    assert hamming(gray_hash(gray), gray_hash(np.asarray(first.convert("L")))) <= 8
    assert hamming(gray_hash(gray), gray_hash(np.asarray(second.convert("L")))) >= 16


@pytest.mark.parametrize("size,reason", [((1, 1), "too-small"), ((12, 300), "too-small"), ((2000, 60), "extreme-aspect"), ((40, 900), "extreme-aspect")])
def test_tiny_and_extreme_aspect_images_have_a_reason(size, reason):
    data = encode(Image.new("RGB", size, (200, 30, 30)), "PNG")
    with pytest.raises(BadImage) as err:
        load_gray(data)
    assert err.value.reason == reason


def test_truncated_jpeg_is_corrupt_not_a_crash():
    data = (IMAGES / "dih" / "bridge-1-original.jpg").read_bytes()
    with pytest.raises(BadImage) as err:
        load_gray(data[: len(data) // 2])
    assert err.value.reason == "corrupt-image"


def test_pillows_bomb_warning_is_an_error():
    # 81 Mpx passes a generous configured limit but trips Pillow's own warning, which is fatal.
    bomb = png_header_only(9000, 9000)
    with pytest.raises(BadImage) as err:
        load_gray(bomb, max_pixels=10**9)
    assert err.value.reason == "decompression-bomb"


def test_padding_trimmed_but_a_blue_sky_kept():
    src = Image.open(CUSTOMER_IMAGES[0]).convert("RGB")
    padded = ImageOps.expand(src, border=(40, 30, 40, 30), fill="black")
    gray, box = load_gray(encode(padded, "PNG"), working_size=1000)
    assert abs(gray.shape[1] - src.width) <= 2 and box[0] == pytest.approx(40 / padded.width, abs=0.01)
    sky = Image.new("RGB", (300, 200), (110, 160, 220))
    sky.paste(src.resize((300, 120)), (0, 80))
    gray, box = load_gray(encode(sky, "PNG"), working_size=1000)
    assert box == (0.0, 0.0, 1.0, 1.0) and gray.shape == (200, 300)


@pytest.mark.parametrize("path", CUSTOMER_IMAGES[:3], ids=lambda p: p.stem)
def test_half_size_averages_whole_two_by_two_blocks(path):
    """Blob octaves and the paste-proposal thumbnail map a pixel to exactly twice its
    coordinates: an odd last row or column is dropped, never spread over its neighbours."""
    gray = load_gray(path.read_bytes(), working_size=320)[0]
    gray = gray[:, : gray.shape[1] // 2 * 2 - 1]  # an odd width
    h, w = gray.shape
    assert w % 2
    blocks = gray[: h // 2 * 2, : w // 2 * 2].astype(np.int32).reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    half = half_size(gray)
    assert half.shape == (h // 2, w // 2)
    assert np.array_equal(half, ((blocks + 2) // 4).astype(np.uint8))  # the mean, rounded
