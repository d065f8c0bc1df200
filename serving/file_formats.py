"""What a file that is not an image is, told by its magic number, never by quoting it.

Error messages about a file the decoders refuse name its format ("PDF document",
"text") or say that it is unknown: the bytes themselves are never shown, since a
message ends up in logs and dead-letter files that get shared, and a file read by
mistake (a key, a password file) must not leak through them.

:func:`describe` is the Python side; ``keras_vit.decode`` builds the same test from
:data:`SIGNATURES` as TensorFlow ops for the exported signatures.

>>> describe(b"%PDF-1.7 ...")
'PDF document'
>>> describe(b"root:*:20228:0:99999:7:::")
'text'
>>> describe(bytes([0x01, 0x02, 0xfe, 0xff]))
'unknown format'
"""

from __future__ import annotations

import re

# (name, offset, magic bytes), first match wins. Only formats people send by mistake
# or that a folder of photos may hold; the image formats the decoder reads are not here.
SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("TIFF image", 0, b"II*\x00"),
    ("TIFF image", 0, b"MM\x00*"),
    ("HEIF/AVIF image or MP4/MOV video", 4, b"ftyp"),
    ("JPEG 2000 image", 0, b"\x00\x00\x00\x0cjP  \r\n"),
    ("JPEG XL image", 0, b"\xff\x0a"),
    ("JPEG XL image", 0, b"\x00\x00\x00\x0cJXL "),
    ("Photoshop document", 0, b"8BPS"),
    ("icon (ICO)", 0, b"\x00\x00\x01\x00"),
    ("RIFF file that is not WebP (WAV or AVI)", 0, b"RIFF"),
    ("PDF document", 0, b"%PDF-"),
    ("ZIP archive (or DOCX/XLSX/JAR)", 0, b"PK\x03\x04"),
    ("gzip data", 0, b"\x1f\x8b"),
    ("bzip2 data", 0, b"BZh"),
    ("xz data", 0, b"\xfd7zXZ\x00"),
    ("Zstandard data", 0, b"\x28\xb5\x2f\xfd"),
    ("7-Zip archive", 0, b"7z\xbc\xaf\x27\x1c"),
    ("ELF executable", 0, b"\x7fELF"),
    ("Windows executable", 0, b"MZ"),
    ("SQLite database", 0, b"SQLite format 3\x00"),
    ("NumPy array (.npy)", 0, b"\x93NUMPY"),
    ("Ogg media", 0, b"OggS"),
    ("MP3 audio", 0, b"ID3"),
    ("FLAC audio", 0, b"fLaC"),
    ("Matroska/WebM video", 0, b"\x1a\x45\xdf\xa3"),
)

# Bytes of the head :func:`describe` looks at (every signature fits in it).
HEAD_BYTES = 16
# Text: printable ASCII, tab, newline, carriage return, and the bytes of UTF-8 beyond ASCII
# (checked on the head only, as the exported graph does).
TEXT_BYTES = frozenset(range(32, 127)) | {9, 10, 13} | frozenset(range(0x80, 0xF5))
UNKNOWN = "unknown format"


def describe(data: bytes) -> str:
    """The format of ``data`` by its magic number, ``"text"``, ``"zero bytes"`` or
    ``"unknown format"``; never any of its content."""
    head = bytes(data[:HEAD_BYTES])
    for name, offset, magic in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head and not any(head):
        return "zero bytes"
    if head and all(byte in TEXT_BYTES for byte in head):
        return "text"
    return UNKNOWN


# Exports made before the decoder named formats quoted a non-image's first bytes:
# "12 bytes starting `hello, world`". A message from such an export is rewritten.
_QUOTED = re.compile(r"(?P<count>\d+) bytes starting `[^`]*`")


def unquote(message: str, data: bytes | None = None) -> str:
    """``message`` without the file content an older export quotes: the quote becomes the
    format of ``data`` when the caller has the bytes, else ``content not shown``.

    >>> unquote("not an image: 26 bytes starting `root:*:20228:0:9...`", b"root:*:20228")
    'not an image: 26 bytes (text)'
    >>> unquote("not an image: 26 bytes starting `root:*:20228:0:9...`")
    'not an image: 26 bytes (content not shown)'
    """
    shown = "content not shown" if data is None else describe(data)
    return _QUOTED.sub(lambda match: f"{match['count']} bytes ({shown})", message)


# The formats the exported decoder reads, by their magic numbers (keras_vit/decode.py).
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")


def image_format(data: bytes) -> str | None:
    """The name in :data:`IMAGE_FORMATS` of an image the decoder reads, by its first
    bytes; None for anything else.

    >>> image_format(b"\\x89PNG\\r\\n\\x1a\\n...") , image_format(b"%PDF-1.7")
    ('PNG', None)
    """
    head = bytes(data[:HEAD_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    return None
