"""In-graph decoding of encoded images for the serving signatures.

Everything here builds TensorFlow ops that end up inside the exported
SavedModel, so TF Serving runs them in C++ with no Python around. For each
element of a DT_STRING batch the graph:

1. sniffs the format from the magic bytes (JPEG, PNG, GIF, BMP, WebP); if none
   matches and the element is base64 text (standard or URL-safe alphabet,
   padded or not, line breaks and a ``data:...;base64,`` prefix tolerated), it
   decodes the text and sniffs again;
2. parses the header to find the image size, checks the structure (segment
   lengths, end-of-image markers, chunk sizes) and rejects more than
   ``max_pixels`` declared pixels *before* any pixel is decoded;
3. decodes to RGB (grayscale, RGBA and palette images included; GIF: first
   frame only; JPEG: at a reduced DCT scale when the image is much larger than
   the model input, never below the model resolution);
4. resizes with an antialiased bilinear filter to the model resolution.

A bad element fails the whole request with ``INVALID_ARGUMENT`` and a message
``"<input>[<index>]: <reason>"``. The checks exist so that the decoders are
only ever given input they handle: TF's decoders report errors without the
element index, and one of them (WebP animations) crashes the process.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# Format codes returned by the sniffer; the order is the branch order of every
# ``tf.switch_case`` below.
JPEG, PNG, GIF, BMP, WEBP, UNKNOWN = range(6)
FORMAT_NAMES = ("JPEG", "PNG", "GIF", "BMP", "WebP")

DEFAULT_MAX_PIXELS = 40_000_000

# A JPEG is decoded at 1/2, 1/4 or 1/8 scale only if the scaled image keeps at
# least this many times the model resolution on both sides. 2 is the
# ``reducing_gap`` PIL's ``Image.thumbnail`` uses with ``Image.draft`` (the same
# libjpeg DCT scaling): the antialiased resize that follows then stays close to
# a resize from the full image.
DCT_SCALE_MARGIN = 2.0

# Decoding several images of a batch at once keeps the cores busy; the bound
# caps the memory of a batch of large images (each alive until resized).
PARALLEL_DECODES = 8

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"
# SOFn markers libjpeg-turbo 2.1 (TF's decoder) can decode: baseline,
# extended and progressive, Huffman or arithmetic coded...
_JPEG_SOF_SUPPORTED = (0xC0, 0xC1, 0xC2, 0xC9, 0xCA)
# ...and lossless and hierarchical ones, which it cannot.
_JPEG_SOF_UNSUPPORTED = (0xC3, 0xC5, 0xC6, 0xC7, 0xCB, 0xCD, 0xCE, 0xCF)
_BMP_DIB_SIZES = (40, 52, 56, 108, 124)
_MAX_JPEG_SEGMENTS = 65536

# --- Error reasons ------------------------------------------------------------
# Parsers return an int32 code (0: fine) and one int64 detail; the message text
# is only built when an element fails, which keeps string ops off the fast path.
_REASONS: list[tuple[str, str, str]] = [("", "", "")]  # (before, detail kind, after)


def _reason(before: str, detail: str = "", after: str = "") -> int:
    _REASONS.append((before, detail, after))
    return len(_REASONS) - 1


_FORMATS = "a JPEG, PNG, GIF, BMP or WebP image"
EMPTY = _reason("empty string: no image bytes")
NOT_AN_IMAGE = _reason(f"not {_FORMATS}, nor base64 text of one")
BASE64_LENGTH = _reason(
    "invalid base64 text: its length without padding is 1 more than a multiple of 4"
)
BASE64_NOT_AN_IMAGE = _reason(
    "base64 text that decodes to ", "int", f" bytes that are not {_FORMATS}"
)
TOO_MANY_PIXELS = _reason("the image declares ", "size", " (decompression bomb guard)")
JPEG_SEGMENTS = _reason("corrupt JPEG: too many header segments")
JPEG_HEADER_TRUNCATED = _reason("truncated JPEG: the header ends inside a segment")
JPEG_BAD_MARKER = _reason("corrupt JPEG: invalid marker segment at byte ", "int")
JPEG_EARLY_EOI = _reason("corrupt JPEG: end-of-image marker before any image data")
JPEG_NO_FRAME = _reason("corrupt JPEG: image data before the frame header (SOF)")
JPEG_SHORT_FRAME = _reason("corrupt JPEG: frame header too short")
JPEG_PROCESS = _reason(
    "unsupported JPEG coding process (SOF marker ",
    "hex",
    "): lossless and hierarchical JPEGs cannot be decoded",
)
JPEG_PRECISION = _reason("", "int", "-bit JPEG samples are not supported (8-bit are)")
JPEG_COMPONENTS = _reason("unsupported JPEG with ", "int", " colour components")
JPEG_DNL = _reason("JPEG height defined by a DNL marker is not supported")
JPEG_ZERO_WIDTH = _reason("corrupt JPEG: width 0")
JPEG_NO_EOI = _reason("truncated JPEG: no end-of-image marker after the image data")
PNG_SHORT = _reason("truncated PNG: shorter than its header")
PNG_NO_IHDR = _reason("corrupt PNG: the first chunk is not IHDR")
PNG_SIZE = _reason("corrupt PNG: zero width or height, or 2^31 or more")
PNG_FORMAT = _reason("corrupt PNG: invalid bit depth or colour type")
PNG_NO_IEND = _reason("truncated PNG: no IEND chunk at the end")
GIF_SHORT = _reason("truncated GIF: shorter than its header")
GIF_TRUNCATED = _reason("truncated GIF: the first frame is incomplete")
GIF_BAD_BLOCK = _reason(
    "corrupt GIF: invalid block at byte ", "int", " before the first frame ends"
)
GIF_NO_IMAGE = _reason("corrupt GIF: no image in the file")
GIF_NO_COLOURS = _reason("corrupt GIF: no colour table for the first frame")
GIF_ZERO_SIZE = _reason("corrupt GIF: zero width or height")
BMP_SHORT = _reason("truncated BMP: shorter than its header")
BMP_HEADER = _reason(
    "unsupported BMP header of ", "int", " bytes (Windows BMP version 3 to 5 headers are supported)"
)
BMP_BITS = _reason("", "int", "-bit BMP is not supported (8, 24 and 32 bits are)")
BMP_COMPRESSED = _reason("compressed BMP is not supported (compression method ", "int", ")")
BMP_SIZE = _reason("corrupt BMP: invalid width or height")
BMP_OFFSET = _reason("corrupt BMP: pixel data inside the header")
BMP_TRUNCATED = _reason("truncated BMP: less pixel data than width x height needs")
WEBP_SHORT = _reason("truncated WebP: shorter than its header")
WEBP_CHUNK = _reason("corrupt WebP: unknown first chunk")
WEBP_ANIMATED = _reason("animated WebP is not supported: send one frame (PNG, JPEG or still WebP)")
WEBP_FRAME = _reason("corrupt WebP: invalid frame header")
WEBP_TRUNCATED = _reason("truncated WebP: shorter than its RIFF size")
WEBP_ZERO_SIZE = _reason("corrupt WebP: zero width or height")
# Reasons given after the image size was read successfully.
_TRUNCATED = (JPEG_NO_EOI, PNG_NO_IEND, GIF_TRUNCATED, BMP_TRUNCATED, WEBP_TRUNCATED)


# --- Public functions -----------------------------------------------------------


def decode_images(
    encoded: tf.Tensor,
    image_size: Sequence[int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    input_name: str = "image_bytes",
) -> tf.Tensor:
    """Decodes a batch of encoded images into float32 ``[N, height, width, 3]`` in ``[0, 255]``.

    ``encoded`` is a DT_STRING vector; ``image_size`` the ``(height, width)``
    of the output; ``input_name`` names the input in error messages
    (``"image_bytes[3]: truncated JPEG ..."``; a name holding ``{}`` is a
    template for the element, e.g. ``"inputs[{}] (image/encoded)"``). Runs on the CPU.
    """
    height, width = (int(s) for s in image_size)
    with tf.device("/cpu:0"):
        encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [-1])
        indices = tf.range(tf.size(encoded, out_type=tf.int32))
        return tf.map_fn(
            lambda item: decode_image(
                item[0], item[1], (height, width), max_pixels=max_pixels, input_name=input_name
            ),
            (encoded, indices),
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
            parallel_iterations=PARALLEL_DECODES,
            name="decode_images",
        )


def decode_image(
    data: tf.Tensor,
    index: tf.Tensor | int,
    image_size: Sequence[int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    input_name: str = "image_bytes",
) -> tf.Tensor:
    """Decodes one encoded image (scalar string) into float32 ``[height, width, 3]``.

    ``index`` is the element's position in its batch, for error messages.
    """
    target = (int(image_size[0]), int(image_size[1]))
    data, fmt, base64_code, base64_detail = _unwrap_base64(tf.convert_to_tensor(data, tf.string))
    length = tf.strings.length(data)
    height, width, code, detail, aux = tf.switch_case(
        fmt,
        [
            lambda: _jpeg_header(data, length),
            lambda: _png_header(data, length),
            lambda: _gif_header(data, length),
            lambda: _bmp_header(data, length),
            lambda: _webp_header(data, length),
            lambda: _header(0, 0, base64_code, base64_detail),
        ],
    )
    # A huge declared size wins over "truncated": the file is then as small as
    # a decompression bomb is, and the size is the clearer reason.
    size_known = tf.logical_or(tf.equal(code, 0), _any_equal(code, _TRUNCATED))
    code = tf.where(tf.logical_and(size_known, height * width > max_pixels), TOO_MANY_PIXELS, code)

    def fail():
        message = _message(input_name, index, code, detail, height, width, max_pixels)
        with tf.control_dependencies([tf.debugging.Assert(False, [message], name="bad_image")]):
            return tf.constant(False)

    valid = tf.cond(tf.equal(code, 0), lambda: tf.constant(True), fail)
    with tf.control_dependencies([valid]):
        image = tf.switch_case(
            fmt,
            [
                lambda: _decode_jpeg(data, height, width, target),
                lambda: tf.io.decode_png(data, channels=3),
                lambda: _decode_gif(data, aux),
                lambda: _decode_bmp(data, aux),
                lambda: _decode_webp(data),
                lambda: tf.zeros([1, 1, 3], tf.uint8),  # unreachable: the check failed
            ],
        )
    image.set_shape([None, None, 3])
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], target))
    # An antialiased resize to the same size is the identity (and not free).
    resized = tf.cond(
        same_size,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, target, method="bilinear", antialias=True),
    )
    resized.set_shape([*target, 3])
    return resized


def jpeg_scale_ratio(height, width, target: Sequence[int], margin: float | None = None):
    """The DCT scale denominator (1, 2, 4 or 8) to decode a ``height`` x ``width`` JPEG at.

    The largest ratio whose output (libjpeg rounds ``ceil(size / ratio)``)
    keeps at least ``margin`` (default ``DCT_SCALE_MARGIN``) times ``target``
    (``(height, width)``) on both sides; 1 when even 1/2 would go below.
    Accepts ints or scalar tensors.
    """
    margin = DCT_SCALE_MARGIN if margin is None else margin
    min_height, min_width = (float(margin) * int(t) for t in target)
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    ratio = tf.constant(1, tf.int32)
    for r in (2, 4, 8):
        fits = tf.logical_and(
            tf.math.ceil(height / r) >= min_height, tf.math.ceil(width / r) >= min_width
        )
        ratio = tf.where(fits, r, ratio)
    return ratio


def reason_texts() -> list[str]:
    """Every error reason, for documentation (``<n>`` marks a number filled in)."""
    return [before + ("<n>" if kind else "") + after for before, kind, after in _REASONS[1:]]


# --- Helpers ----------------------------------------------------------------------


def _i64(value):
    return tf.constant(value, tf.int64)


def _header(height, width, code, detail=0, aux=0):
    """What a header parser returns: ``(height, width, code, detail, aux)``.

    ``aux`` carries one format-specific number to the decoder: the end of the
    first GIF frame, or for BMP the pixel data end (bits 0-39) and bit depth
    (bits 40 and up).
    """
    return (
        tf.cast(height, tf.int64),
        tf.cast(width, tf.int64),
        tf.cast(code, tf.int32),
        tf.cast(detail, tf.int64),
        tf.cast(aux, tf.int64),
    )


def _first_error(checks):
    """``(code, detail)`` of the first failed ``(failed, code[, detail])`` check, else 0."""
    code = tf.constant(0, tf.int32)
    detail = _i64(0)
    for check in reversed(checks):
        failed = check[0]
        code = tf.where(failed, tf.constant(check[1], tf.int32), code)
        if len(check) > 2:
            detail = tf.where(failed, tf.cast(check[2], tf.int64), detail)
    return code, detail


def _message(input_name, index, code, detail, height, width, max_pixels):
    before, kinds, after = (tf.constant(list(column)) for column in zip(*_REASONS, strict=True))
    kind = tf.gather(kinds, code)
    size = tf.strings.join(
        [
            tf.strings.as_string(width),
            "x",
            tf.strings.as_string(height),
            " = ",
            tf.strings.as_string(height * width),
            f" pixels, more than the limit of {int(max_pixels)}",
        ]
    )
    shown = tf.case(
        [
            (tf.equal(kind, "int"), lambda: tf.strings.as_string(detail)),
            (tf.equal(kind, "hex"), lambda: tf.strings.join(["0x", _hex(detail)])),
            (tf.equal(kind, "size"), lambda: size),
        ],
        default=lambda: tf.constant(""),
    )
    return tf.strings.join(
        [
            tf.strings.format(_element_template(input_name) + ": ", tf.cast(index, tf.int64)),
            tf.gather(before, code),
            shown,
            tf.gather(after, code),
        ]
    )


def _element_template(input_name: str) -> str:
    """``"image_bytes"`` -> ``"image_bytes[{}]"``; a name holding ``{}`` is used as it is."""
    return input_name if "{}" in input_name else input_name + "[{}]"


def _hex(value):
    """Two upper-case hex digits of a byte value."""
    digits = tf.constant(list("0123456789ABCDEF"))
    value = tf.clip_by_value(value, 0, 255)
    return tf.strings.join([tf.gather(digits, value // 16), tf.gather(digits, value % 16)])


def _substr(data, length, pos, n):
    """``n`` bytes of ``data`` from ``pos``, zero-padded past the end (never out of range)."""
    pos = tf.clip_by_value(tf.cast(pos, tf.int32), 0, length)
    chunk = tf.strings.substr(data, pos, n)
    return tf.strings.substr(tf.strings.join([chunk, b"\x00" * n]), 0, n)


def _bytes_at(data, length, pos, n):
    """``n`` bytes of ``data`` from ``pos`` as an int64 vector, zeros past the end."""
    chunk = _substr(data, length, pos, n)
    return tf.cast(tf.reshape(tf.io.decode_raw(chunk, tf.uint8), [n]), tf.int64)


def _be(b, i, n):
    value = _i64(0)
    for k in range(n):
        value = value * 256 + b[i + k]
    return value


def _le(b, i, n):
    value = _i64(0)
    for k in reversed(range(n)):
        value = value * 256 + b[i + k]
    return value


def _any_equal(value, options):
    return tf.reduce_any(tf.equal(value, tf.constant(list(options), value.dtype)))


def _contains(data, start, needle: bytes):
    """Whether ``needle`` occurs in ``data[start:]``; looks at the end first, the usual place."""
    length = tf.strings.length(data)
    tail = tf.strings.substr(data, tf.maximum(length - len(needle), 0), len(needle))

    def search():
        rest = tf.strings.substr(
            data, tf.clip_by_value(tf.cast(start, tf.int32), 0, length), length
        )
        return tf.size(tf.strings.split(rest, sep=needle)) > 1

    return tf.cond(tf.equal(tail, needle), lambda: tf.constant(True), search)


# --- Format sniffing and base64 ---------------------------------------------------


def _sniff(data):
    head = _substr(data, tf.strings.length(data), 0, 32)

    def starts(offset, magic: bytes):
        return tf.equal(tf.strings.substr(head, offset, len(magic)), magic)

    found = [
        starts(0, b"\xff\xd8\xff"),
        starts(0, _PNG_SIGNATURE),
        tf.logical_or(starts(0, b"GIF87a"), starts(0, b"GIF89a")),
        # "BM" alone is also base64 text; the zero high bytes of the DIB header
        # size (offset 15) never are.
        tf.logical_and(starts(0, b"BM"), starts(15, b"\x00\x00\x00")),
        tf.logical_and(starts(0, b"RIFF"), starts(8, b"WEBP")),
    ]
    fmt = tf.constant(UNKNOWN, tf.int32)
    for code in reversed(range(len(found))):
        fmt = tf.where(found[code], code, fmt)
    return fmt


def _unwrap_base64(data):
    """``(image bytes, format, code, detail)``: base64 text is decoded when no format matches."""
    fmt = _sniff(data)
    empty = tf.equal(tf.strings.length(data), 0)

    def raw():
        return data, fmt, tf.where(empty, EMPTY, NOT_AN_IMAGE), _i64(0)

    def from_base64():
        text = tf.strings.regex_replace(
            data, r"^data:[^,]{0,200};base64,", "", replace_global=False
        )
        text = tf.strings.regex_replace(text, r"\s+", "")
        text = tf.strings.regex_replace(text, r"=+$", "", replace_global=False)
        alphabet = tf.strings.regex_full_match(text, r"[A-Za-z0-9+/_-]+")
        length_ok = tf.not_equal(tf.strings.length(text) % 4, 1)

        def decode():
            # tf.io.decode_base64 reads the URL-safe alphabet, padded or not.
            url_safe = tf.strings.regex_replace(
                tf.strings.regex_replace(text, r"\+", "-"), "/", "_"
            )
            decoded = tf.io.decode_base64(url_safe)
            inner = _sniff(decoded)
            code = tf.where(tf.equal(inner, UNKNOWN), BASE64_NOT_AN_IMAGE, 0)
            return decoded, inner, code, tf.cast(tf.strings.length(decoded), tf.int64)

        def invalid():
            return data, fmt, tf.where(alphabet, BASE64_LENGTH, NOT_AN_IMAGE), _i64(0)

        return tf.cond(tf.logical_and(alphabet, length_ok), decode, invalid)

    return tf.cond(tf.logical_or(empty, tf.not_equal(fmt, UNKNOWN)), raw, from_base64)


# --- Header parsers -----------------------------------------------------------------


def _jpeg_header(data, length):
    """Walks the marker segments from SOI to the first SOS and reads the frame header (SOF).

    The loop body only hops from segment to segment (it runs once per segment
    of every request); what stopped the walk is worked out once, after it.
    """
    length64 = tf.cast(length, tf.int64)
    sof_markers = _JPEG_SOF_SUPPORTED + _JPEG_SOF_UNSUPPORTED

    def hop(state):
        pos, sof_pos = state[0], state[1]
        b = _bytes_at(data, length, pos, 4)
        marker = b[1]
        fill = tf.equal(marker, 0xFF)  # fill bytes may precede a marker
        standalone = tf.logical_or(
            tf.equal(marker, 0x01), tf.logical_and(marker >= 0xD0, marker <= 0xD7)
        )
        seg_len = b[2] * 256 + b[3]
        step = tf.where(fill, _i64(1), tf.where(standalone, _i64(2), seg_len + 2))
        going = tf.reduce_all(
            tf.stack(
                [
                    tf.equal(b[0], 0xFF),
                    tf.logical_not(_any_equal(marker, (0xDA, 0xD9, 0xD8, 0x00))),
                    pos + 4 <= length64,
                    tf.logical_or(tf.logical_or(fill, standalone), seg_len >= 2),
                    pos + step <= length64,
                ]
            )
        )
        first_sof = tf.logical_and(
            tf.logical_and(going, sof_pos < 0), _any_equal(marker, sof_markers)
        )
        return [
            tf.stack(
                [
                    tf.where(going, pos + step, pos),
                    tf.where(first_sof, pos, sof_pos),
                    tf.cast(going, tf.int64),
                ]
            )
        ]

    (state,) = tf.while_loop(
        lambda state: tf.equal(state[2], 1),
        hop,
        [tf.constant([2, -1, 1], tf.int64)],
        maximum_iterations=_MAX_JPEG_SEGMENTS,
    )
    pos, sof_pos = state[0], state[1]
    stop = _bytes_at(data, length, pos, 4)
    sof = _bytes_at(data, length, sof_pos, 10)
    height, width = _be(sof, 5, 2), _be(sof, 7, 2)
    precision, components, sof_marker = sof[4], sof[9], sof[1]
    code, detail = _first_error(
        [
            (tf.equal(state[2], 1), JPEG_SEGMENTS),
            (pos + 2 > length64, JPEG_HEADER_TRUNCATED),
            (tf.not_equal(stop[0], 0xFF), JPEG_BAD_MARKER, pos),
            (tf.equal(stop[1], 0xD9), JPEG_EARLY_EOI),
            (_any_equal(stop[1], (0xD8, 0x00)), JPEG_BAD_MARKER, pos),
            (tf.logical_and(tf.equal(stop[1], 0xDA), sof_pos < 0), JPEG_NO_FRAME),
            (pos + 4 > length64, JPEG_HEADER_TRUNCATED),
            (stop[2] * 256 + stop[3] < 2, JPEG_BAD_MARKER, pos),
            (tf.not_equal(stop[1], 0xDA), JPEG_HEADER_TRUNCATED),
            (_be(sof, 2, 2) < 8, JPEG_SHORT_FRAME),
            (tf.logical_not(_any_equal(sof_marker, _JPEG_SOF_SUPPORTED)), JPEG_PROCESS, sof_marker),
            (tf.not_equal(precision, 8), JPEG_PRECISION, precision),
            (tf.logical_not(_any_equal(components, (1, 3, 4))), JPEG_COMPONENTS, components),
            (tf.equal(height, 0), JPEG_DNL),
            (tf.equal(width, 0), JPEG_ZERO_WIDTH),
        ]
    )
    # Entropy-coded data never contains FF D9, so its presence after the first
    # scan means the file was not cut short.
    code = tf.cond(
        tf.equal(code, 0),
        lambda: tf.where(_contains(data, pos, _JPEG_EOI), 0, JPEG_NO_EOI),
        lambda: code,
    )
    return _header(height, width, code, detail)


def _png_header(data, length):
    b = _bytes_at(data, length, 8, 21)  # IHDR length, type, width, height, depth, colour type
    width, height = _be(b, 8, 4), _be(b, 12, 4)
    code, detail = _first_error(
        [
            (length < 33, PNG_SHORT),
            (
                tf.logical_or(
                    tf.not_equal(_be(b, 0, 4), 13),
                    tf.not_equal(_substr(data, length, 12, 4), b"IHDR"),
                ),
                PNG_NO_IHDR,
            ),
            (
                tf.reduce_any(
                    tf.stack(
                        [tf.equal(width, 0), tf.equal(height, 0), width >= 2**31, height >= 2**31]
                    )
                ),
                PNG_SIZE,
            ),
            (
                tf.logical_not(
                    tf.logical_and(
                        _any_equal(b[16], (1, 2, 4, 8, 16)), _any_equal(b[17], (0, 2, 3, 4, 6))
                    )
                ),
                PNG_FORMAT,
            ),
        ]
    )
    code = tf.cond(
        tf.equal(code, 0),
        lambda: tf.where(_contains(data, 33, _PNG_IEND), 0, PNG_NO_IEND),
        lambda: code,
    )
    return _header(height, width, code, detail)


def _gif_header(data, length):
    """Reads the screen descriptor and walks the blocks to the end of the first frame."""
    b = _bytes_at(data, length, 0, 13)
    screen_width, screen_height = _le(b, 6, 2), _le(b, 8, 2)
    has_global_colours = b[10] >= 128
    global_colours = tf.where(
        has_global_colours, 3 * tf.bitwise.left_shift(_i64(2), b[10] % 8), _i64(0)
    )
    length64 = tf.cast(length, tf.int64)
    # state: [pos, phase, going, frame width, frame height, local colours]
    at_block, in_extension, in_image, finished = 0, 1, 2, 3

    def hop(state):
        pos, phase = state[0], state[1]
        d = _bytes_at(data, length, pos, 10)
        descriptor = tf.logical_and(tf.equal(phase, at_block), tf.equal(d[0], 0x2C))
        extension = tf.logical_and(tf.equal(phase, at_block), tf.equal(d[0], 0x21))
        in_blocks = tf.not_equal(phase, at_block)
        block_end = tf.logical_and(in_blocks, tf.equal(d[0], 0))
        local_colours = tf.where(d[9] >= 128, 3 * tf.bitwise.left_shift(_i64(2), d[9] % 8), _i64(0))
        # Descriptor: 10 bytes, local colour table, LZW code size byte.
        step = tf.where(
            extension,
            _i64(2),
            tf.where(descriptor, 11 + local_colours, tf.where(in_blocks, 1 + d[0], _i64(0))),
        )
        new_phase = tf.where(
            extension,
            _i64(in_extension),
            tf.where(
                descriptor,
                _i64(in_image),
                tf.where(
                    block_end,
                    tf.where(tf.equal(phase, in_image), _i64(finished), _i64(at_block)),
                    phase,
                ),
            ),
        )
        going = tf.logical_and(
            tf.logical_and(step > 0, pos + step <= length64), tf.not_equal(new_phase, finished)
        )
        moved = tf.logical_or(going, tf.equal(new_phase, finished))
        return [
            tf.stack(
                [
                    tf.where(moved, pos + step, pos),
                    tf.where(moved, new_phase, phase),
                    tf.cast(going, tf.int64),
                    tf.where(descriptor, _le(d, 5, 2), state[3]),
                    tf.where(descriptor, _le(d, 7, 2), state[4]),
                    tf.where(descriptor, local_colours, state[5]),
                ]
            )
        ]

    (state,) = tf.while_loop(
        lambda state: tf.equal(state[2], 1),
        hop,
        [tf.stack([13 + global_colours, _i64(at_block), _i64(1), _i64(0), _i64(0), _i64(0)])],
        maximum_iterations=tf.maximum(length, 1),  # every hop moves on by one byte or more
    )
    pos, phase = state[0], state[1]
    stop = _bytes_at(data, length, pos, 1)[0]
    code, detail = _first_error(
        [
            (length < 13, GIF_SHORT),
            (tf.equal(phase, finished), 0),
            (pos >= length64, GIF_TRUNCATED),
            (tf.not_equal(phase, at_block), GIF_TRUNCATED),
            (tf.equal(stop, 0x3B), GIF_NO_IMAGE),
            (tf.logical_not(_any_equal(stop, (0x21, 0x2C))), GIF_BAD_BLOCK, pos),
            (tf.constant(True), GIF_TRUNCATED),  # a block that runs past the end
        ]
    )
    code, detail = tf.cond(
        tf.equal(code, 0),
        lambda: _first_error(
            [
                (
                    tf.logical_and(tf.logical_not(has_global_colours), tf.equal(state[5], 0)),
                    GIF_NO_COLOURS,
                ),
                (
                    tf.logical_or(tf.equal(screen_width, 0), tf.equal(screen_height, 0)),
                    GIF_ZERO_SIZE,
                ),
            ]
        ),
        lambda: (code, detail),
    )
    # A frame may be larger than the screen: guard the larger of the two.
    height = tf.maximum(screen_height, state[4])
    width = tf.maximum(screen_width, state[3])
    return _header(height, width, code, detail, aux=pos)


def _bmp_header(data, length):
    b = _bytes_at(data, length, 0, 66)
    pixel_offset, dib_size = _le(b, 10, 4), _le(b, 14, 4)
    width, raw_height = _le(b, 18, 4), _le(b, 22, 4)
    height = tf.where(raw_height >= 2**31, 2**32 - raw_height, raw_height)  # negative: top-down
    bits, compression = _le(b, 28, 2), _le(b, 30, 4)
    # 32-bit "bitfields" with the usual BGRA masks is the same layout as plain.
    standard_masks = tf.reduce_all(
        tf.stack(
            [
                tf.equal(_le(b, 54, 4), 0x00FF0000),
                tf.equal(_le(b, 58, 4), 0x0000FF00),
                tf.equal(_le(b, 62, 4), 0x000000FF),
            ]
        )
    )
    compression_ok = tf.logical_or(
        tf.equal(compression, 0),
        tf.logical_and(
            tf.equal(compression, 3), tf.logical_and(tf.equal(bits, 32), standard_masks)
        ),
    )
    row_bytes = (bits // 8 * width + 3) // 4 * 4
    pixels_end = pixel_offset + row_bytes * height
    code, detail = _first_error(
        [
            (length < 54, BMP_SHORT),
            (tf.logical_not(_any_equal(dib_size, _BMP_DIB_SIZES)), BMP_HEADER, dib_size),
            (tf.logical_not(_any_equal(bits, (8, 24, 32))), BMP_BITS, bits),
            (tf.logical_not(compression_ok), BMP_COMPRESSED, compression),
            (
                tf.reduce_any(tf.stack([tf.equal(width, 0), width >= 2**31, tf.equal(height, 0)])),
                BMP_SIZE,
            ),
            (pixel_offset < 14 + dib_size, BMP_OFFSET),
            (pixels_end > tf.cast(length, tf.int64), BMP_TRUNCATED),
        ]
    )
    aux = tf.bitwise.left_shift(bits, 40) + tf.clip_by_value(pixels_end, 0, 2**40 - 1)
    return _header(height, width, code, detail, aux)


def _webp_header(data, length):
    b = _bytes_at(data, length, 0, 30)
    riff_size = _le(b, 4, 4)
    chunk = _substr(data, length, 12, 4)
    vp8x, vp8, vp8l = (tf.equal(chunk, name) for name in (b"VP8X", b"VP8 ", b"VP8L"))
    lossless_bits = _le(b, 21, 4)
    # Canvas size: VP8X stores size - 1 in 24 bits; lossy VP8 14 bits after the
    # start code; lossless VP8L size - 1 in 14-bit fields.
    width = tf.where(
        vp8x,
        _le(b, 24, 3) + 1,
        tf.where(
            vp8,
            tf.bitwise.bitwise_and(_le(b, 26, 2), 0x3FFF),
            tf.where(vp8l, tf.bitwise.bitwise_and(lossless_bits, 0x3FFF) + 1, _i64(0)),
        ),
    )
    height = tf.where(
        vp8x,
        _le(b, 27, 3) + 1,
        tf.where(
            vp8,
            tf.bitwise.bitwise_and(_le(b, 28, 2), 0x3FFF),
            tf.where(
                vp8l,
                tf.bitwise.bitwise_and(tf.bitwise.right_shift(lossless_bits, 14), 0x3FFF) + 1,
                _i64(0),
            ),
        ),
    )
    frame_ok = tf.where(
        vp8,
        tf.equal(_substr(data, length, 23, 3), b"\x9d\x01\x2a"),
        tf.logical_or(tf.logical_not(vp8l), tf.equal(b[20], 0x2F)),
    )
    code, detail = _first_error(
        [
            (length < 30, WEBP_SHORT),
            (tf.logical_not(tf.reduce_any(tf.stack([vp8x, vp8, vp8l]))), WEBP_CHUNK),
            # TF 2.21's WebP decoder can crash the process on animations.
            (
                tf.logical_and(vp8x, tf.not_equal(tf.bitwise.bitwise_and(b[20], 2), 0)),
                WEBP_ANIMATED,
            ),
            (tf.logical_not(frame_ok), WEBP_FRAME),
            (tf.cast(length, tf.int64) < riff_size + 8, WEBP_TRUNCATED),
            (tf.logical_or(tf.equal(width, 0), tf.equal(height, 0)), WEBP_ZERO_SIZE),
        ]
    )
    return _header(height, width, code, detail)


# --- Decoders ---------------------------------------------------------------------


def _decode_jpeg(data, height, width, target):
    ratio = jpeg_scale_ratio(height, width, target)
    branch = tf.where(ratio == 8, 3, tf.where(ratio == 4, 2, tf.where(ratio == 2, 1, 0)))
    # ``ratio`` is an attribute of the op, so one op per scale. INTEGER_ACCURATE
    # is libjpeg's ISLOW IDCT, the one PIL uses (TF's default is the fast one).
    return tf.switch_case(
        branch,
        [
            lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE")
            for r in (1, 2, 4, 8)
        ],
    )


def _decode_gif(data, first_frame_end):
    # Cut after the first frame and close the file with a trailer: TF's GIF
    # decoder reads every frame, which for an animation costs time and memory
    # the model never uses (and a many-frame file is a decompression bomb).
    first_frame = tf.strings.join(
        [tf.strings.substr(data, 0, tf.cast(first_frame_end, tf.int32)), b"\x3b"]
    )
    return tf.io.decode_gif(first_frame)[0]


def _decode_bmp(data, aux):
    bits = tf.bitwise.right_shift(aux, 40)
    pixels_end = tf.cast(tf.bitwise.bitwise_and(aux, 2**40 - 1), tf.int32)
    # TF's decoder insists on the exact file size: drop trailing bytes.
    data = tf.strings.substr(data, 0, pixels_end)

    def palette_image():
        # TF reads an 8-bit BMP as grayscale: the values are palette indices.
        length = tf.strings.length(data)
        dib_size = _le(_bytes_at(data, length, 14, 4), 0, 4)
        colours = _le(_bytes_at(data, length, 46, 4), 0, 4)
        colours = tf.where(tf.logical_or(tf.equal(colours, 0), colours > 256), _i64(256), colours)
        table = tf.reshape(_bytes_at(data, length, 14 + dib_size, 1024), [256, 4])
        table = tf.where(tf.range(256, dtype=tf.int64)[:, None] < colours, table, _i64(0))
        rgb = tf.cast(tf.reverse(table[:, :3], axis=[1]), tf.uint8)  # stored as B, G, R, 0
        indices = tf.io.decode_bmp(data, channels=0)[:, :, 0]
        return tf.gather(rgb, tf.cast(indices, tf.int32))

    return tf.cond(tf.equal(bits, 8), palette_image, lambda: tf.io.decode_bmp(data, channels=3))


def _decode_webp(data):
    # channels=0 gives the stored 3 or 4 channels; a still image is one frame.
    return tf.io.decode_webp(data, channels=0)[0, :, :, :3]
