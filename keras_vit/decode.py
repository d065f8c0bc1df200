"""The one image decoder: training, in-process prediction and the exported signatures use it.

Everything here builds TensorFlow ops, so the same code runs inside
``tf.data`` pipelines, in eager prediction and inside the exported SavedModel,
where TF Serving runs it in C++ with no Python around. The pixels are the same
everywhere because the same functions make them:

- :func:`decode_image`: bytes -> uint8 RGB with TF's own decoders (JPEG with the
  accurate integer IDCT, at a reduced DCT scale when the image is much larger
  than the model input; GIF: first frame; palette BMPs expanded);
- :func:`resize`: the antialiased bilinear resize to the model resolution;
- :func:`decode_batch` / :func:`decode_images`: the checked batch version the
  signatures use. It sniffs the format from the magic bytes (base64 text of an
  image is decoded first), reads the declared size from the header, refuses
  more than ``max_pixels`` per image and ``max_request_pixels`` per request
  *before* decoding, then decodes and resizes.

An element that TF's decoders reject does not fail the batch blindly: the
decode runs in a ``tf.data`` map with ``ignore_errors``, so the element that
dropped out is known and the message names it: ``"image_bytes[2]: truncated
JPEG: the data ends before the image does"``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import tensorflow as tf

from serving import file_formats

# Format codes; the order is the branch order of every ``tf.switch_case`` below.
JPEG, PNG, GIF, BMP, WEBP, UNKNOWN = range(6)
FORMAT_NAMES = ("JPEG", "PNG", "GIF", "BMP", "WebP", "image")

DEFAULT_MAX_PIXELS = 40_000_000

# A JPEG is decoded at 1/2, 1/4 or 1/8 scale only if the scaled image keeps at
# least this many times the model resolution on both sides. 2 is the
# ``reducing_gap`` PIL's ``Image.thumbnail`` uses with ``Image.draft`` (the same
# libjpeg DCT scaling): the antialiased resize that follows then stays close to
# a resize from the full image.
DCT_SCALE_MARGIN = 2.0

# Images of one request decoded at once; the request's pixel budget bounds their memory.
PARALLEL_DECODES = 8

# The GIF walk to the end of the first frame hops over runs of equal-sized
# sub-blocks, up to this many per hop, and gives up after this many hops (each
# hop costs tens of microseconds): regular 255-byte blocks are crossed 1 MB per
# hop, a flood of one-byte sub-blocks 8 KB per hop.
GIF_RUN_WINDOW = 4096
GIF_MAX_HOPS = 1024

# libjpeg reads a progressive JPEG's every scan over the whole image: a few bytes
# per scan can cost milliseconds each. Encoders write about 10.
MAX_JPEG_SCANS = 100

# --- Reasons --------------------------------------------------------------------
# (text before the detail, detail kind, text after); code 0 is "no error".
_REASONS: list[tuple[str, str, str]] = [("", "", "")]


def _reason(before: str, detail: str = "", after: str = "") -> int:
    _REASONS.append((before, detail, after))
    return len(_REASONS) - 1


EMPTY = _reason("empty string: no image bytes")
NOT_AN_IMAGE = _reason(
    "not a JPEG, PNG, GIF, BMP or WebP image, nor base64 text of one: ", "described"
)
TOO_MANY_PIXELS = _reason("the image declares ", "size", " (decompression bomb guard)")
REQUEST_PIXELS = _reason("the images of this request add up to ", "total")
TRUNCATED = _reason("truncated ", "format", ": the data ends before the image does")
CORRUPT = _reason("corrupt or unsupported ", "format", ": the TensorFlow decoder rejects it")
JPEG_SCANS = _reason(
    "unsupported JPEG: ", "int", f" scans, more than the {MAX_JPEG_SCANS} accepted"
)
GIF_NO_IMAGE = _reason("corrupt GIF: no image before the end of the file")
GIF_BAD_BLOCK = _reason("corrupt GIF: invalid block at byte ", "int", " before the first image")
GIF_BLOCKS = _reason(
    f"unsupported GIF: more than {GIF_MAX_HOPS} runs of blocks before its first frame ends"
)
BMP_UNSUPPORTED = _reason(
    "unsupported BMP: only uncompressed 8-, 24- and 32-bit Windows BMPs are read"
)
WEBP_ANIMATED = _reason("animated WebP is not supported: send one frame (PNG, JPEG or still WebP)")


# --- Public functions ---------------------------------------------------------------


def decode_images(
    encoded: tf.Tensor,
    image_size: Sequence[int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_request_pixels: int | None = None,
    input_name: str = "image_bytes",
) -> tf.Tensor:
    """Decodes a batch of encoded images into float32 ``[N, height, width, 3]`` in ``[0, 255]``.

    A bad element fails the call with ``INVALID_ARGUMENT`` and the message
    ``"<input_name>[<index>]: <reason>"`` (``input_name`` holding ``{}`` is a
    template for the element, e.g. ``"inputs[{}] (feature image/encoded)"``).
    Arguments as for :func:`decode_batch`.
    """
    pixels, reasons = decode_batch(
        encoded,
        image_size,
        max_pixels=max_pixels,
        max_request_pixels=max_request_pixels,
        fail_fast=True,
    )
    failed = tf.not_equal(reasons, "")

    def message():
        first = tf.argmax(tf.cast(failed, tf.int32), output_type=tf.int32)
        before, _, after = _element_template(input_name).partition("{}")
        index = tf.strings.as_string(first)
        return tf.strings.join([before, index, after, ": ", reasons[first]])

    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, [message()], name="bad_image")]):
            return tf.constant(False)

    check = tf.cond(tf.reduce_any(failed), fail, lambda: tf.constant(True))
    with tf.control_dependencies([check]):
        return tf.identity(pixels)


def decode_batch(
    encoded: tf.Tensor,
    image_size: Sequence[int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_request_pixels: int | None = None,
    fail_fast: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """``(pixels, reasons)`` for a DT_STRING vector, without failing on bad elements.

    ``pixels`` is float32 ``[N, height, width, 3]`` (zeros for a bad element);
    ``reasons`` a string ``[N]``, empty where the element decoded. An image
    declaring more than ``max_pixels`` pixels is refused before decoding, and
    so is an image that takes the pixels decoded by the request over
    ``max_request_pixels`` (default: ``max_pixels``; a JPEG counts the pixels
    of its reduced DCT scale). With ``fail_fast``, nothing is decoded once a
    header fails (the caller fails the whole batch anyway), ``pixels`` is then
    empty ``[0, height, width, 3]``, and an element that is empty or no image
    at all fails the batch before any header is read. Runs on the CPU.
    """
    height, width = target = tuple(int(s) for s in image_size)
    budget = int(max_pixels if max_request_pixels is None else max_request_pixels)
    with tf.device("/cpu:0"):
        encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [-1])
        data, fmt, from_base64, code = _unwrap(encoded)
        count = tf.size(encoded)
        # Failing fast, an element that is empty or no image at all (found for the whole
        # batch at once, above) fails the request before any per-element work.
        early = tf.logical_and(fail_fast, tf.reduce_any(tf.not_equal(code, 0)))
        headed = tf.where(early, 0, count)

        def header(index, data, fmt, code):
            h, w, code, detail, aux, cost = _checked_header(data, fmt, code, target, max_pixels)
            return index, data, fmt, code, detail, h, w, aux, cost

        options = tf.data.Options()
        options.autotune.enabled = False
        options.experimental_optimization.apply_default_optimizations = False
        batch = tf.cast(tf.maximum(count, 1), tf.int64)
        headers = (
            tf.data.Dataset.from_tensor_slices(
                (tf.range(headed), data[:headed], fmt[:headed], code[:headed])
            )
            .map(header, num_parallel_calls=PARALLEL_DECODES, deterministic=True)
            .ignore_errors()  # TF's JPEG header reader rejected it: CORRUPT below
            .batch(batch)
        )
        no_headers = [tf.zeros([0], t) for t in (tf.int32, tf.string, tf.int32, tf.int32)]
        no_headers += [tf.zeros([0], tf.int64)] * 5
        index, data_h, fmt_h, code_h, detail_h, h_h, w_h, aux_h, cost_h = (
            headers.concatenate(tf.data.Dataset.from_tensors(tuple(no_headers)))
            .take(1)
            .with_options(options)
            .get_single_element()
        )
        # Every header of the batch at once: the request budget is a running sum.
        total = tf.cumsum(cost_h)
        over = tf.logical_and(tf.equal(code_h, 0), total > budget)
        code_h = tf.where(over, REQUEST_PIXELS, code_h)
        detail_h = tf.where(over, total, detail_h)
        failed = tf.logical_or(tf.reduce_any(tf.not_equal(code_h, 0)), tf.size(index) < count)
        skip = tf.logical_and(fail_fast, failed)
        # Only the elements to decode go on: a refused request makes no pixels at all.
        chosen = tf.reshape(
            tf.where(tf.logical_and(tf.equal(code_h, 0), tf.logical_not(skip))), [-1]
        )

        def decode(index, data, fmt, detail, h, w, aux):
            return index, resize(_decode(data, fmt, h, w, detail, aux, target), target)

        decoded = (
            tf.data.Dataset.from_tensor_slices(
                tuple(
                    tf.gather(x, chosen) for x in (index, data_h, fmt_h, detail_h, h_h, w_h, aux_h)
                )
            )
            .map(decode, num_parallel_calls=PARALLEL_DECODES, deterministic=True)
            .ignore_errors()  # a decoder rejected it: CORRUPT below
            .batch(batch)
        )
        nothing = (tf.zeros([0], tf.int32), tf.zeros([0, *target, 3]))
        # An empty batch when every element dropped out (or none was decoded).
        decoded = decoded.concatenate(tf.data.Dataset.from_tensors(nothing)).take(1)
        decoded_index, pixels = decoded.with_options(options).get_single_element()

        where = index[:, None]
        present = tf.scatter_nd(where, tf.ones_like(index), [count]) > 0
        # Not read at all (an early failure): the code the batch-wide checks gave.
        code = tf.where(
            present, tf.scatter_nd(where, code_h, [count]), tf.where(early, code, CORRUPT)
        )
        wanted = tf.scatter_nd(tf.gather(index, chosen)[:, None], tf.ones_like(chosen), [count])
        got = tf.scatter_nd(decoded_index[:, None], tf.ones_like(decoded_index), [count])
        code = tf.where(tf.logical_and(wanted > 0, tf.equal(got, 0)), CORRUPT, code)
        code = tf.where(
            tf.logical_and(tf.equal(code, CORRUPT), _truncated(data, fmt)), TRUNCATED, code
        )
        size = [tf.scatter_nd(where, x, [count]) for x in (detail_h, h_h, w_h)]
        reasons = tf.cond(
            tf.reduce_any(tf.not_equal(code, 0)),
            lambda: _reason_texts(code, encoded, fmt, from_base64, *size, max_pixels, budget),
            lambda: tf.fill([count], ""),
        )
        pixels = tf.cond(
            skip,
            lambda: tf.zeros([0, height, width, 3]),
            lambda: tf.scatter_nd(decoded_index[:, None], pixels, [count, height, width, 3]),
        )
        pixels = tf.ensure_shape(pixels, [None, height, width, 3])
        return pixels, reasons


def decode_image(
    data: tf.Tensor, image_size: Sequence[int], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tf.Tensor:
    """Decodes one encoded image (a scalar string) to uint8 ``[h, w, 3]`` for ``image_size``.

    The pixels :func:`decode_batch` resizes: JPEGs much larger than
    ``image_size`` come out at a reduced DCT scale. Bad data fails with
    ``INVALID_ARGUMENT`` (TF's decoder message, or one of the reasons above).
    For ``tf.data`` pipelines, which cannot name a batch element.
    """
    target = tuple(int(s) for s in image_size)
    data, fmt, _, code = _unwrap(tf.convert_to_tensor(data, tf.string))
    h, w, code, detail, aux, _ = _checked_header(data, fmt, code, target, max_pixels)
    reason = tf.gather([before for before, _, _ in _REASONS], code)
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(code, 0), [reason])]):
        return _decode(data, fmt, h, w, detail, aux, target)


def traced(function, image_size: Sequence[int], shape: Sequence[int | None], **settings):
    """``function(encoded, image_size, **settings)`` (:func:`decode_image`,
    :func:`decode_batch` or :func:`decode_images`) as a ``tf.function`` of a string
    tensor of ``shape``, traced once per process and settings.

    Tracing the decoder's graph takes 0.4-1 CPU-s; training maps it three or four times
    a run (the image check, training, validation, test) and an export once per
    signature input, so everything after the first calls the one traced graph.
    """
    size = tuple(int(s) for s in image_size)
    return _traced(function, size, tuple(shape), tuple(sorted(settings.items())))


@functools.lru_cache(maxsize=32)
def _traced(function, image_size, shape, settings):
    return tf.function(
        lambda encoded: function(encoded, image_size, **dict(settings)),
        input_signature=[tf.TensorSpec(shape, tf.string)],
        autograph=False,
    )


def resize(image: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """Antialiased bilinear resize of ``[..., h, w, 3]`` pixels to ``image_size``, as float32.

    At the same size it is the identity (an antialiased resize then is, and is not free).
    """
    target = tuple(int(s) for s in image_size)
    image = tf.convert_to_tensor(image)
    same = tf.reduce_all(tf.equal(tf.shape(image)[-3:-1], target))
    resized = tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, target, method="bilinear", antialias=True),
    )
    return tf.ensure_shape(resized, [*image.shape[:-3], *target, 3])


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


# --- Format sniffing and base64 (element-wise, any shape) -------------------------------


def _head(data, n: int):
    """The first ``n`` bytes of each element as int32 ``[..., n]``, zero-padded past the end."""
    head = tf.strings.substr(data, 0, n)
    return tf.cast(tf.io.decode_raw(head, tf.uint8, fixed_length=n), tf.int32)


def _sniff(data):
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 16), b"\x00" * 16]), 0, 16)

    def starts(offset, magic: bytes):
        return tf.equal(tf.strings.substr(head, offset, len(magic)), magic)

    found = [
        starts(0, b"\xff\xd8\xff"),
        starts(0, b"\x89PNG\r\n\x1a\n"),
        tf.logical_or(starts(0, b"GIF87a"), starts(0, b"GIF89a")),
        # "BM" alone is also base64 text; the zero high bytes of the DIB header size never are.
        tf.logical_and(starts(0, b"BM"), starts(15, b"\x00")),
        tf.logical_and(starts(0, b"RIFF"), starts(8, b"WEBP")),
    ]
    fmt = tf.fill(tf.shape(data), UNKNOWN)
    for code in reversed(range(len(found))):
        fmt = tf.where(found[code], code, fmt)
    return fmt


def _describe(data):
    """:func:`serving.file_formats.describe` as ops: the format's name by its magic number,
    "text", "zero bytes" or "unknown format" for each element; no content."""
    n = file_formats.HEAD_BYTES
    length = tf.strings.length(data)
    padded = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, n), b"\x00" * n]), 0, n)
    head = _head(data, n)
    inside = tf.range(n) < length[..., None]
    text_bytes = tf.constant([byte in file_formats.TEXT_BYTES for byte in range(256)])
    is_text = tf.reduce_all(tf.logical_or(tf.gather(text_bytes, head), ~inside), axis=-1)
    is_zero = tf.reduce_all(tf.logical_or(tf.equal(head, 0), ~inside), axis=-1)
    some = length > 0
    names = tf.where(tf.logical_and(is_text, some), "text", file_formats.UNKNOWN)
    names = tf.where(tf.logical_and(is_zero, some), "zero bytes", names)
    for name, offset, magic in reversed(file_formats.SIGNATURES):  # the first match wins
        found = tf.equal(tf.strings.substr(padded, offset, len(magic)), magic)
        names = tf.where(tf.logical_and(found, length >= offset + len(magic)), name, names)
    return names


def _unwrap(data):
    """``(bytes, format, from_base64, code)``: base64 text of an image is decoded first.

    Standard or URL-safe alphabet, padded or not, line breaks and a
    ``data:...;base64,`` prefix tolerated.
    """
    fmt = _sniff(data)
    candidate = tf.logical_and(tf.equal(fmt, UNKNOWN), tf.strings.length(data) > 0)
    text = tf.where(candidate, data, "")
    text = tf.strings.regex_replace(text, r"^data:[^,]{0,200};base64,", "", replace_global=False)
    text = tf.strings.regex_replace(text, r"\s+", "")
    text = tf.strings.regex_replace(text, r"=+$", "", replace_global=False)
    valid = tf.logical_and(
        tf.strings.regex_full_match(text, r"[A-Za-z0-9+/_-]+"),
        tf.not_equal(tf.strings.length(text) % 4, 1),
    )
    # tf.io.decode_base64 reads the URL-safe alphabet, padded or not.
    text = tf.strings.regex_replace(tf.strings.regex_replace(text, r"\+", "-"), "/", "_")
    decoded = tf.io.decode_base64(tf.where(valid, text, ""))
    inner = _sniff(decoded)
    from_base64 = tf.logical_and(valid, tf.not_equal(inner, UNKNOWN))
    data = tf.where(from_base64, decoded, data)
    fmt = tf.where(from_base64, inner, fmt)
    code = tf.where(tf.equal(fmt, UNKNOWN), NOT_AN_IMAGE, 0)
    code = tf.where(tf.equal(tf.strings.length(data), 0), EMPTY, code)
    return data, fmt, from_base64, code


def _truncated(data, fmt):
    """Whether each element lacks its format's end (JPEG EOI, PNG IEND, GIF trailer, RIFF size)."""
    length = tf.strings.length(data)

    def ends_with(tail: bytes):
        n = len(tail)
        return tf.equal(
            tf.strings.substr(data, tf.maximum(length - n, 0), tf.minimum(length, n)), tail
        )

    head = _head(data, 8)
    riff_size = sum(tf.cast(head[..., 4 + k], tf.int64) * 256**k for k in range(4))
    ended = tf.where(
        tf.equal(fmt, JPEG),
        ends_with(b"\xff\xd9"),
        tf.where(tf.equal(fmt, PNG), ends_with(b"\x00\x00\x00\x00IEND\xaeB`\x82"), ends_with(b";")),
    )
    webp_short = tf.cast(length, tf.int64) < riff_size + 8
    return tf.where(tf.equal(fmt, WEBP), webp_short, tf.logical_and(fmt <= GIF, ~ended))


def _reason_texts(code, encoded, fmt, from_base64, detail, height, width, max_pixels, budget):
    before, kinds, after = (tf.constant(list(column)) for column in zip(*_REASONS, strict=True))
    kind = tf.gather(kinds, code)
    number = tf.strings.as_string
    # What a non-image is, never what it holds: "12 bytes (text)", "1,234 bytes (PDF document)".
    length = tf.strings.length(encoded)
    shown = tf.stack(
        [
            tf.strings.join([number(length), " bytes (", _describe(encoded), ")"]),
            tf.strings.join(
                [number(width), "x", number(height), " = ", number(height * width)]
                + [f" pixels, more than the limit of {int(max_pixels)}"]
            ),
            tf.strings.join(
                [
                    number(detail),
                    f" pixels with this one, more than the limit of {budget} per request",
                ]
            ),
            tf.gather(tf.constant(FORMAT_NAMES), fmt),
            number(detail),
        ],
        axis=-1,
    )
    column = tf.argmax(
        tf.cast(tf.equal(kind[:, None], ["described", "size", "total", "format", "int"]), tf.int32),
        axis=-1,
    )
    shown = tf.where(tf.equal(kind, ""), "", tf.gather(shown, column, batch_dims=1))
    suffix = tf.where(from_base64, " (after decoding base64 text)", "")
    text = tf.strings.join([tf.gather(before, code), shown, tf.gather(after, code), suffix])
    return tf.where(tf.equal(code, 0), "", text)


def _element_template(input_name: str) -> str:
    """``"image_bytes"`` -> ``"image_bytes[{}]"``; a name holding ``{}`` is used as it is."""
    return input_name if "{}" in input_name else input_name + "[{}]"


# --- Headers: (height, width, code, detail, aux) -----------------------------------------


def _checked_header(data, fmt, code, target, max_pixels):
    """``(height, width, code, detail, aux, cost)``: the header read, the size limit applied.

    ``cost`` is the pixels the decode makes (a JPEG's at its reduced DCT scale).
    """
    h, w, code, detail, aux = tf.switch_case(
        tf.where(tf.equal(code, 0), fmt, UNKNOWN),
        [lambda f=f: _HEADERS[f](data) for f in range(5)] + [lambda: _result(0, 0, code, 0, 0)],
    )
    # A huge declared size wins over "truncated": a bomb is as small as that.
    sized = tf.logical_or(tf.equal(code, 0), tf.equal(code, TRUNCATED))
    code = tf.where(tf.logical_and(sized, h * w > max_pixels), TOO_MANY_PIXELS, code)
    ratio = tf.where(tf.equal(fmt, JPEG), jpeg_scale_ratio(h, w, target), 1)
    ratio = tf.cast(ratio, tf.int64)
    cost = tf.where(tf.equal(code, 0), -(-h // ratio) * -(-w // ratio), 0)
    return h, w, code, detail, aux, cost


def _result(height, width, code, detail, aux):
    height, width, detail, aux = (tf.cast(x, tf.int64) for x in (height, width, detail, aux))
    return height, width, tf.cast(code, tf.int32), detail, aux


def _le(b, i, n):
    return sum(tf.cast(b[i + k], tf.int64) * 256**k for k in range(n))


def _be(b, i, n):
    return sum(tf.cast(b[i + k], tf.int64) * 256 ** (n - 1 - k) for k in range(n))


def _jpeg_header(data):
    # libjpeg reads the header; a corrupt one raises, and the element drops out (CORRUPT).
    shape = tf.io.extract_jpeg_shape(data, output_type=tf.int64)
    # FF DA starts a scan: entropy-coded data never holds it (FF is stuffed as FF 00).
    scans = tf.size(tf.strings.split(data, b"\xff\xda"), out_type=tf.int64) - 1
    return _result(shape[0], shape[1], tf.where(scans > MAX_JPEG_SCANS, JPEG_SCANS, 0), scans, 0)


def _png_header(data):
    b = _head(data, 24)  # signature, IHDR length and type, width, height
    ihdr = tf.equal(tf.strings.substr(tf.strings.join([data, b"\x00" * 16]), 12, 4), b"IHDR")
    # Without IHDR the size is unknown (0): the decoder rejects the file.
    return _result(tf.where(ihdr, _be(b, 20, 4), 0), tf.where(ihdr, _be(b, 16, 4), 0), 0, 0, 0)


def _bmp_header(data):
    b = _head(data, 66)
    pixel_offset, dib_size = _le(b, 10, 4), _le(b, 14, 4)
    width, height = _le(b, 18, 4), _le(b, 22, 4)
    height = tf.where(height >= 2**31, 2**32 - height, height)  # negative: top-down rows
    bits, compression = _le(b, 28, 2), _le(b, 30, 4)
    # 32-bit "bitfields" with the usual BGRA masks is the same layout as plain.
    masks = tf.stack([_le(b, 54, 4), _le(b, 58, 4), _le(b, 62, 4)])
    bitfields = tf.logical_and(
        tf.logical_and(tf.equal(compression, 3), tf.equal(bits, 32)),
        tf.reduce_all(tf.equal(masks, tf.constant([0xFF0000, 0xFF00, 0xFF], tf.int64))),
    )
    supported = tf.reduce_all(
        tf.stack(
            [
                tf.logical_or(tf.equal(compression, 0), bitfields),
                tf.reduce_any(tf.equal(bits, tf.constant([8, 24, 32], tf.int64))),
                tf.reduce_any(tf.equal(dib_size, tf.constant([40, 52, 56, 108, 124], tf.int64))),
            ]
        )
    )
    pixels_end = pixel_offset + (bits // 8 * width + 3) // 4 * 4 * height
    code = tf.where(supported, 0, BMP_UNSUPPORTED)
    code = tf.where(
        tf.logical_and(tf.equal(code, 0), pixels_end > tf.cast(tf.strings.length(data), tf.int64)),
        TRUNCATED,
        code,
    )
    # aux: where the pixel data ends (bits 0-39) and the bit depth (bits 40 and up).
    aux = tf.bitwise.left_shift(bits, 40) + tf.clip_by_value(pixels_end, 0, 2**40 - 1)
    return _result(height, width, code, 0, aux)


def _webp_header(data):
    b = _head(data, 30)
    chunk = tf.strings.substr(tf.strings.join([data, b"\x00" * 16]), 12, 4)
    vp8x, vp8, vp8l = (tf.equal(chunk, name) for name in (b"VP8X", b"VP8 ", b"VP8L"))
    bits = _le(b, 21, 4)
    # Canvas size: VP8X stores size - 1 in 24 bits; lossy VP8 14 bits after the
    # start code; lossless VP8L size - 1 in 14-bit fields.
    width = tf.where(
        vp8x,
        _le(b, 24, 3) + 1,
        tf.where(vp8, _le(b, 26, 2) % 16384, tf.where(vp8l, bits % 16384 + 1, 0)),
    )
    height = tf.where(
        vp8x,
        _le(b, 27, 3) + 1,
        tf.where(vp8, _le(b, 28, 2) % 16384, tf.where(vp8l, bits // 16384 % 16384 + 1, 0)),
    )
    # TF 2.21's WebP decoder can crash the process on animations: they never reach it.
    animated = tf.logical_and(vp8x, tf.not_equal(b[20] // 2 % 2, 0))
    return _result(height, width, tf.where(animated, WEBP_ANIMATED, 0), 0, 0)


def _gif_header(data):
    """Walks the blocks to the end of the first frame: its size, and where to cut the file.

    A hop crosses a whole run of equal-sized sub-blocks (encoders write 255-byte
    ones) by looking ``GIF_RUN_WINDOW`` blocks ahead at once, so a flood of
    sub-blocks costs a few hops; after ``GIF_MAX_HOPS`` hops the file is refused.
    """
    b = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)
    n = tf.size(b)
    b = tf.concat([b, tf.zeros([1], tf.int32)], 0)

    def byte(i):  # a zero past the end
        return tf.gather(b, tf.minimum(i, n))

    def colour_table(flags):
        return tf.where(flags >= 128, 3 * 2 ** (flags % 8 + 1), 0)

    def le16(i):
        return byte(i) + 256 * byte(i + 1)

    at_block, in_extension, in_image, done = 0, 1, 2, 3
    window = tf.range(GIF_RUN_WINDOW)

    def hop(pos, phase, frame_w, frame_h, image_at, control_at):
        c = byte(pos)
        block = tf.equal(phase, at_block)
        descriptor = tf.logical_and(block, tf.equal(c, 0x2C))
        extension = tf.logical_and(block, tf.equal(c, 0x21))
        # A graphic control extension (transparency) is kept with the frame.
        control = tf.logical_and(extension, tf.equal(byte(pos + 1) * 256 + byte(pos + 2), 0xF904))
        # In sub-blocks: the run of blocks as long as this one, within the window.
        ahead = pos + (c + 1) * window
        same = tf.logical_and(tf.equal(byte(ahead), c), ahead < n)
        run = tf.argmin(tf.cast(same, tf.int32), output_type=tf.int32)
        run = tf.where(tf.reduce_all(same), GIF_RUN_WINDOW, run)
        step = tf.where(tf.equal(c, 0), 1, (c + 1) * run)
        step = tf.where(descriptor, 11 + colour_table(byte(pos + 9)), step)
        step = tf.where(extension, 2, step)
        ended = tf.logical_and(tf.logical_not(block), tf.equal(c, 0))
        new_phase = tf.where(ended, tf.where(tf.equal(phase, in_image), done, at_block), phase)
        new_phase = tf.where(descriptor, in_image, tf.where(extension, in_extension, new_phase))
        return (
            pos + step,
            new_phase,
            tf.where(descriptor, le16(pos + 5), frame_w),
            tf.where(descriptor, le16(pos + 7), frame_h),
            tf.where(descriptor, pos, image_at),
            tf.where(control, pos, control_at),
        )

    def at_a_block(pos):
        return tf.reduce_any(tf.equal(byte(pos), [0x21, 0x2C]))

    def going(pos, phase, *_):
        stuck = tf.logical_and(tf.equal(phase, at_block), tf.logical_not(at_a_block(pos)))
        return tf.logical_and(tf.not_equal(phase, done), tf.logical_and(pos < n, ~stuck))

    start = 13 + colour_table(byte(10))
    pos, phase, frame_w, frame_h, image_at, control_at = tf.while_loop(
        going, hop, (start, at_block, 0, 0, 0, -1), maximum_iterations=GIF_MAX_HOPS
    )
    code = tf.where(at_a_block(pos), GIF_BLOCKS, GIF_BAD_BLOCK)
    code = tf.where(tf.equal(byte(pos), 0x3B), GIF_NO_IMAGE, code)
    code = tf.where(tf.equal(phase, at_block), code, GIF_BLOCKS)
    code = tf.where(pos >= n, TRUNCATED, code)
    done = tf.equal(phase, done)
    code = tf.where(done, 0, code)
    # A frame may be larger than the screen: guard the larger of the two.
    height = tf.maximum(le16(8), frame_h)
    width = tf.maximum(le16(6), frame_w)
    # For the decoder: where the control extension (+1, 0: none) and the frame start.
    layout = tf.cast(control_at + 1, tf.int64) * 2**31 + tf.cast(image_at, tf.int64)
    return _result(height, width, code, tf.where(done, layout, tf.cast(pos, tf.int64)), pos)


_HEADERS = (_jpeg_header, _png_header, _gif_header, _bmp_header, _webp_header)


# --- Decoders ---------------------------------------------------------------------------


def _decode(data, fmt, height, width, detail, aux, target):
    """uint8 ``[h, w, 3]`` with TF's decoders; the header was read by the matching parser."""
    image = tf.switch_case(
        fmt,
        [
            lambda: _decode_jpeg(data, height, width, target),
            lambda: tf.io.decode_png(data, channels=3),
            lambda: _decode_gif(data, detail, aux),
            lambda: _decode_bmp(data, aux),
            # channels=0 gives the stored 3 or 4 channels; a still image is one frame.
            lambda: tf.io.decode_webp(data, channels=0)[0, :, :, :3],
            lambda: tf.zeros([1, 1, 3], tf.uint8),  # never: the element failed before
        ],
    )
    return tf.ensure_shape(image, [None, None, 3])


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


def _decode_gif(data, layout, frame_end):
    # Only the header, the first frame and its control extension go to TF's decoder:
    # it reads every frame and every extension block (time and memory the model never
    # uses; a flood of comment sub-blocks costs giflib seconds).
    flags = _head(data, 11)[10]
    header_end = 13 + tf.where(flags >= 128, 3 * 2 ** (flags % 8 + 1), 0)
    control_at = tf.cast(layout // 2**31 - 1, tf.int32)
    image_at, frame_end = tf.cast(layout % 2**31, tf.int32), tf.cast(frame_end, tf.int32)
    parts = [
        tf.strings.substr(data, 0, header_end),
        tf.strings.substr(data, tf.maximum(control_at, 0), tf.where(control_at >= 0, 8, 0)),
        tf.strings.substr(data, image_at, frame_end - image_at),
        b"\x3b",
    ]
    return tf.io.decode_gif(tf.strings.join(parts))[0]


def _decode_bmp(data, aux):
    bits = tf.bitwise.right_shift(aux, 40)
    # TF's decoder insists on the exact file size: drop trailing bytes.
    data = tf.strings.substr(data, 0, tf.cast(aux % 2**40, tf.int32))

    def palette_image():
        # TF reads an 8-bit BMP as grayscale: the values are palette indices.
        b = _head(data, 54)
        table_start, colours = 14 + _le(b, 14, 4), tf.cast(_le(b, 46, 4), tf.int32)
        colours = tf.where(tf.logical_or(tf.equal(colours, 0), colours > 256), 256, colours)
        table = _head(tf.strings.substr(data, tf.cast(table_start, tf.int32), 1024), 1024)
        table = tf.where(tf.range(256)[:, None] < colours, tf.reshape(table, [256, 4]), 0)
        rgb = tf.cast(tf.reverse(table[:, :3], axis=[1]), tf.uint8)  # stored as B, G, R, 0
        return tf.gather(rgb, tf.cast(tf.io.decode_bmp(data, channels=0)[:, :, 0], tf.int32))

    return tf.cond(tf.equal(bits, 8), palette_image, lambda: tf.io.decode_bmp(data, channels=3))
