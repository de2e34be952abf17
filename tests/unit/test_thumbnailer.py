"""The thumbnailer on real and hostile images: sizes, orientation, metadata, formats, bombs,
truncated files, non-images; and as the child process the portal runs (its time limit)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import msgpack
import pytest

from portal import thumbjobs, thumbnailer
from portal.thumbnailer import BOX, MAX_THUMB, NotAThumbnail, make_thumbnail

Image = pytest.importorskip("PIL.Image")


def _photo(width: int, height: int, fmt: str = "JPEG", **save: object) -> bytes:
    """A picture with detail (a gradient and noise), so it compresses like a photo."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    noise = Image.effect_noise((width, height), 40).convert("RGB")
    image = Image.blend(image, noise, 0.3)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def _opened(data: bytes):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(("width", "height"), [(4000, 3000), (3000, 4000), (300, 200), (20, 10)])
def test_a_thumbnail_fits_the_box_keeps_the_shape_and_is_small(width, height):
    thumb = make_thumbnail(_photo(width, height))
    image = _opened(thumb.data)
    assert image.format == "WEBP" and thumb.ctype == "image/webp"
    assert (image.width, image.height) == (thumb.width, thumb.height)
    assert max(image.size) == min(BOX, max(width, height))  # never enlarged
    assert (thumb.source_width, thumb.source_height) == (width, height)
    assert abs(image.width / image.height - width / height) < 0.05
    assert len(thumb.data) <= MAX_THUMB


def test_every_listed_format_gives_a_thumbnail_and_a_gif_its_first_frame():
    for fmt in ("JPEG", "PNG", "WEBP"):
        assert make_thumbnail(_photo(600, 400, fmt)).width == BOX
    frames = [Image.new("RGB", (100, 100), color) for color in ("red", "blue", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    thumb = _opened(make_thumbnail(out.getvalue()).data).convert("RGB")
    red, green, blue = thumb.getpixel((50, 50))
    assert red > 200 and blue < 50, "not the first frame"


def test_transparency_is_kept():
    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (100, 100, 200, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    thumb = _opened(make_thumbnail(out.getvalue()).data)
    assert thumb.mode == "RGBA" and thumb.getpixel((5, 5))[3] == 0


def test_the_exif_orientation_is_applied_and_no_metadata_is_kept():
    exif = Image.Exif()
    exif[0x0112] = 6          # "rotate 90 clockwise to show"
    exif[0x010F] = "Camera maker"
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # a GPS position
    data = _photo(800, 400, exif=exif.tobytes(), comment=b"secret note")
    thumb = make_thumbnail(data)
    assert (thumb.width, thumb.height) == (128, 256)  # stored landscape, shown portrait
    assert (thumb.source_width, thumb.source_height) == (400, 800)
    image = _opened(thumb.data)
    assert not image.getexif() and "exif" not in image.info and "icc_profile" not in image.info
    assert b"Camera maker" not in thumb.data and b"secret note" not in thumb.data


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG claiming ``width`` x ``height`` pixels: a decompression bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 1024)  # far fewer bytes than the pixels it claims
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(50_000, 50_000), (9000, 8000)])
def test_a_decompression_bomb_is_refused_at_once(width, height):
    # 2.5 G pixels (Pillow's own refusal) and 72 M (over our bound, where Pillow only warns).
    began = time.monotonic()
    with pytest.raises(NotAThumbnail, match="pixels"):
        make_thumbnail(_png_header_only(width, height))
    assert time.monotonic() - began < 1.0


def test_a_truncated_file_and_a_non_image_are_refused():
    photo = _photo(1200, 900)
    with pytest.raises(NotAThumbnail):
        make_thumbnail(photo[: len(photo) // 2])
    with pytest.raises(NotAThumbnail):
        make_thumbnail(b"<html><script>alert(1)</script></html>")  # named .png by a user
    with pytest.raises(NotAThumbnail):
        make_thumbnail(b"")


def test_formats_off_the_list_are_refused_whatever_they_are_called():
    for fmt in ("BMP", "TIFF", "ICO"):
        with pytest.raises(NotAThumbnail):
            make_thumbnail(_photo(64, 64, fmt))


def test_an_oversized_input_is_refused_unread():
    with pytest.raises(NotAThumbnail, match="too large"):
        make_thumbnail(b"\xff" * (thumbnailer.MAX_INPUT + 1))


def test_the_child_process_answers_and_is_killed_when_it_overruns():
    photo = _photo(2000, 1500)
    answer = thumbjobs.made_from(iter([photo[:1000], photo[1000:]]))
    assert answer["ok"] and _opened(answer["b"]).width == BOX
    refused = thumbjobs.made_from(iter([b"not an image"]))
    assert refused == {"ok": False, "why": refused["why"]} and "cannot be read" in refused["why"]
    began = time.monotonic()
    slow = thumbjobs._run(iter([photo]), timeout=0.01)  # killed before it can answer
    assert slow["ok"] is False and time.monotonic() - began < 5


def test_a_store_failure_while_feeding_the_child_is_raised_and_kills_the_child():
    def chunks():
        yield b"\xff\xd8" + b"\0" * 1000
        raise ConnectionError("the store went away")

    with pytest.raises(ConnectionError):
        thumbjobs.made_from(chunks())
    assert thumbjobs._slots.acquire(blocking=False)  # the slot was given back
    thumbjobs._slots.release()


def test_the_childs_answer_is_parsed_defensively():
    assert thumbjobs._parsed(b"", 0)["ok"] is False
    assert thumbjobs._parsed(b"\xc1garbage", 0)["ok"] is False
    assert thumbjobs._parsed(msgpack.packb({"ok": True}), -9)["ok"] is False
