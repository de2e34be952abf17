"""Make a small WebP thumbnail of an image a user uploaded, safely (docs/data-model.md, "Drive").

The bytes are hostile until proven otherwise, so decoding them is fenced in:

- only JPEG, PNG, GIF (first frame) and WebP are opened (``formats=``), whatever the name says;
- at most :data:`MAX_INPUT` bytes are read, and an image over :data:`MAX_PIXELS` pixels is
  refused before decoding (Pillow's decompression-bomb guard, made strict: its warning is an
  error here, not only its refusal at twice the bound);
- the caller (:mod:`portal.previews`) runs this file as a process of its own, which sets
  limits on its own CPU time and memory before it imports Pillow and is killed after
  :data:`WALL_SECONDS`, so a bomb, a decoder bug or a crash costs one short-lived process.

The thumbnail fits :data:`BOX` pixels square, has the EXIF orientation applied, and carries
no metadata (no EXIF, no GPS position, no ICC profile, no comment): it is a new image
made of pixels only.  It stays under :data:`MAX_THUMB` bytes so that it is stored inline in
a cell (the store makes values above 16 KiB blobs).

This module imports only the standard library, Pillow and msgpack, so that it can run as
a script (``python -I portal/thumbnailer.py``) without loading the portal.
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

BOX = 256                    # the thumbnail fits a square this many pixels wide
MAX_INPUT = 50 * 1024 * 1024  # bytes of image decoded at most; larger files get the icon
MAX_PIXELS = 64_000_000       # a 48 MP phone photo passes; a 20000x20000 PNG does not
MAX_THUMB = 15 * 1024         # bytes; under the store's 16 KiB inline limit
FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
CPU_SECONDS = 5               # the child's CPU time limit (RLIMIT_CPU)
MEMORY_BYTES = 1 << 30        # the child's address space limit (RLIMIT_AS)
WALL_SECONDS = 10.0           # the parent kills the child after this long
# Quality steps: the first that fits MAX_THUMB wins; a busy photo needs the lower ones.
_QUALITIES = (78, 60, 45, 30)


class NotAThumbnail(Exception):
    """The bytes are not an image this module makes thumbnails of; the message says why."""


@dataclass(frozen=True)
class Thumbnail:
    """A finished thumbnail: WebP bytes and their size in pixels."""

    data: bytes
    width: int
    height: int
    ctype: str = "image/webp"
    source_width: int = 0   # the image's own size, as shown (after its EXIF orientation)
    source_height: int = 0


def make_thumbnail(data: bytes) -> Thumbnail:
    """The thumbnail of the image in ``data``.

    :raises NotAThumbnail: not one of :data:`FORMATS`, too large, a bomb, truncated or
        otherwise undecodable.
    """
    from PIL import Image, ImageOps

    if len(data) > MAX_INPUT:
        raise NotAThumbnail("the file is too large to make a thumbnail of")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                shown = _shown_size(image)
                if image.format == "JPEG":
                    # Decode at 1/2..1/8 scale straight from the DCT: a 12 MP photo in ms.
                    image.draft("RGB", (BOX * 2, BOX * 2))
                image.load()  # the first frame only (GIF, animated WebP)
                small = _small(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise NotAThumbnail(f"the image has more than {MAX_PIXELS:,} pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError,
            Image.UnidentifiedImageError) as exc:
        # Pillow reports broken and truncated files through all of these.
        raise NotAThumbnail(f"the image cannot be read ({type(exc).__name__})") from None
    thumb = _encode(small)
    return Thumbnail(thumb.data, thumb.width, thumb.height, thumb.ctype, *shown)


def _shown_size(image: object) -> tuple[int, int]:
    """The image's size as it is shown: turned a quarter by EXIF orientations 5 to 8."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        return 0, 0
    width, height = image.size
    return (height, width) if image.getexif().get(0x0112) in (5, 6, 7, 8) else (width, height)


def _small(image: object) -> object:
    """``image`` shrunk into the box, in a mode WebP stores (RGB, or RGBA with transparency)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise NotAThumbnail("the image cannot be read")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    image.thumbnail((BOX, BOX), Image.Resampling.LANCZOS, reducing_gap=2.0)
    # A new image of the pixels alone: nothing of the original's metadata comes along.
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    return clean


def _encode(image: object) -> Thumbnail:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise NotAThumbnail("the image cannot be read")
    for attempt in range(2):
        for quality in _QUALITIES:
            out = io.BytesIO()
            image.save(out, "WEBP", quality=quality, method=4)
            if out.tell() <= MAX_THUMB:
                return Thumbnail(out.getvalue(), image.width, image.height)
        if attempt == 0:  # noise does not compress: a smaller picture then
            image = image.resize((max(1, image.width // 2), max(1, image.height // 2)))
    raise NotAThumbnail("the thumbnail does not fit its cell")


def _limit_self() -> None:
    """Bound this process's CPU time and memory before any hostile byte is decoded."""
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def main() -> int:
    """Run as a child process: image bytes on stdin, one msgpack answer on stdout.

    The answer is ``{"ok": true, "w", "h", "t", "b", "ow", "oh"}`` or ``{"ok": false, "why"}``.
    """
    import msgpack

    _limit_self()
    data = sys.stdin.buffer.read(MAX_INPUT + 1)
    try:
        thumb = make_thumbnail(data)
        answer = {"ok": True, "w": thumb.width, "h": thumb.height, "t": thumb.ctype,
                  "b": thumb.data, "ow": thumb.source_width, "oh": thumb.source_height}
    except NotAThumbnail as exc:
        answer = {"ok": False, "why": str(exc)}
    sys.stdout.buffer.write(msgpack.packb(answer, use_bin_type=True))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
