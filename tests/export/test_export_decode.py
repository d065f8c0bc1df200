"""In-graph decoding (keras_vit/decode.py) against PIL, the reference decoder.

Images are decoded at their own size (no resize), so pixels can be compared
exactly with what PIL decodes from the same bytes (``convert("RGB")``, as
transformers' ViTImageProcessor does).
"""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest

from tests.export.conftest import encode

HEIGHT, WIDTH = 48, 64


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(photos["chelsea"]).resize((WIDTH, HEIGHT), Image.LANCZOS))


@pytest.fixture(scope="module")
def decode():
    """``decode(list of bytes) -> float32 [N, HEIGHT, WIDTH, 3]`` through the exported decoder."""
    import tensorflow as tf

    from keras_vit.decode import decode_images

    fn = tf.function(
        lambda encoded: decode_images(encoded, (HEIGHT, WIDTH), max_pixels=1_000_000),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )
    return lambda images: fn(tf.constant(images, tf.string)).numpy()


def pil_rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def decode_error(decode, images) -> str:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        decode(images)
    return caught.value.message


def formats(photo: np.ndarray) -> dict[str, bytes]:
    from PIL import Image

    image = Image.fromarray(photo)
    alpha = np.dstack([photo, np.tile(np.linspace(0, 255, WIDTH, dtype=np.uint8), (HEIGHT, 1))])
    return {
        "jpeg": encode(image, "JPEG", quality=92),
        "progressive jpeg": encode(image, "JPEG", quality=80, progressive=True),
        "grayscale jpeg": encode(image.convert("L"), "JPEG"),
        "png": encode(image, "PNG"),
        "grayscale png": encode(image.convert("L"), "PNG"),
        "rgba png": encode(Image.fromarray(alpha, "RGBA"), "PNG"),
        "palette png": encode(image.convert("P", palette=Image.ADAPTIVE, colors=64), "PNG"),
        "gif": encode(image.convert("P", palette=Image.ADAPTIVE), "GIF"),
        "bmp": encode(image, "BMP"),
        "rgba bmp": encode(Image.fromarray(alpha, "RGBA"), "BMP"),
        "palette bmp": encode(image.convert("P", palette=Image.ADAPTIVE, colors=200), "BMP"),
        "grayscale bmp": encode(image.convert("L"), "BMP"),
        "lossless webp": encode(image, "WEBP", lossless=True),
        "lossless rgba webp": encode(Image.fromarray(alpha, "RGBA"), "WEBP", lossless=True),
    }


@pytest.mark.parametrize(
    "name",
    [
        "jpeg",
        "progressive jpeg",
        "grayscale jpeg",
        "png",
        "grayscale png",
        "rgba png",
        "palette png",
        "gif",
        "bmp",
        "rgba bmp",
        "palette bmp",
        "grayscale bmp",
        "lossless webp",
        "lossless rgba webp",
    ],
)
def test_formats_decode_to_the_same_rgb_pixels_as_pil(decode, photo, name):
    data = formats(photo)[name]
    np.testing.assert_array_equal(decode([data])[0], pil_rgb(data))


def test_lossy_webp_and_cmyk_jpeg_decode_close_to_pil(decode, photo):
    from PIL import Image

    for data in (
        encode(Image.fromarray(photo), "WEBP", quality=90),
        encode(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95),
    ):
        difference = np.abs(decode([data])[0] - pil_rgb(data))
        assert difference.mean() < 1.0 and difference.max() <= 8


def test_sixteen_bit_png_keeps_the_high_byte(decode, photo):
    from PIL import Image

    gray16 = photo.mean(axis=-1).astype(np.uint16) * 257
    data = encode(Image.fromarray(gray16), "PNG")
    expected = np.repeat((gray16 >> 8)[..., None], 3, axis=-1)
    assert np.abs(decode([data])[0] - expected).max() <= 1


def test_only_the_first_gif_frame_is_used(decode, photo):
    from PIL import Image

    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    data = buffer.getvalue()
    np.testing.assert_array_equal(decode([data])[0], pil_rgb(data))


@pytest.mark.parametrize(
    "wrap",
    [
        base64.b64encode,
        lambda data: base64.b64encode(data).rstrip(b"="),
        base64.urlsafe_b64encode,
        lambda data: base64.urlsafe_b64encode(data).rstrip(b"="),
        base64.encodebytes,  # MIME: line breaks every 76 characters
        lambda data: b"data:image/png;base64," + base64.b64encode(data),
    ],
    ids=["standard", "standard-unpadded", "url-safe", "url-safe-unpadded", "mime", "data-url"],
)
def test_base64_text_is_decoded_in_graph(decode, photo, wrap):
    # A size whose PNG needs padding, and bytes that differ between alphabets.
    for data in (encode(photo, "PNG"), encode(photo[:, :-1], "JPEG")):
        assert base64.b64encode(data) != base64.urlsafe_b64encode(data)
        raw, wrapped = decode([data, wrap(data)])
        np.testing.assert_array_equal(raw, wrapped)


def patched(data: bytes, offset: int, fmt: str, *values) -> bytes:
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt) :]


def huge_headers(photo) -> dict[str, bytes]:
    """Small valid files whose headers declare far more pixels than the limit."""
    files = formats(photo)
    jpeg, progressive, big = files["jpeg"], files["progressive jpeg"], (60000, 60000)
    sof = jpeg.index(b"\xff\xc0")
    webp = encode(photo, "WEBP", lossless=True)
    vp8x = b"RIFF" + struct.pack("<I", 4 + 18) + b"WEBPVP8X" + struct.pack("<I", 10)
    vp8x += b"\x00\x00\x00\x00" + (16383).to_bytes(3, "little") * 2
    return {
        "jpeg": patched(jpeg, sof + 5, ">HH", 60000, 60000),
        "progressive jpeg": patched(progressive, progressive.index(b"\xff\xc2") + 5, ">HH", *big),
        "png": patched(files["png"], 16, ">II", 100000, 100000),
        "gif": patched(files["gif"], 6, "<HH", 65535, 65535),
        "bmp": patched(files["bmp"], 18, "<ii", 40000, 40000),
        "webp lossless": patched(webp, 21, "<I", 16383 | (16383 << 14)),
        "webp extended": vp8x,
    }


@pytest.mark.parametrize(
    "name", ["jpeg", "progressive jpeg", "png", "gif", "bmp", "webp lossless", "webp extended"]
)
def test_headers_declaring_too_many_pixels_are_rejected_before_decoding(decode, photo, name):
    data = huge_headers(photo)[name]
    assert len(data) < 50_000
    message = decode_error(decode, [formats(photo)["png"], data])
    assert "image_bytes[1]: the image declares" in message
    assert "more than the limit of 1000000 (decompression bomb guard)" in message


def test_the_pixel_limit_counts_the_declared_size(decode, photo):
    from PIL import Image

    big = encode(Image.fromarray(photo).resize((1250, 800)), "PNG")  # exactly 1,000,000
    assert decode([big]).shape == (1, HEIGHT, WIDTH, 3)
    bigger = encode(Image.fromarray(photo).resize((1251, 800)), "PNG")
    assert "1251x800 = 1000800 pixels" in decode_error(decode, [bigger])


def crafted_gif(colour_table: bool) -> bytes:
    """A black-and-white striped GIF written byte by byte, sized like the test photos.

    LZW with a clear code before every pixel keeps codes 3 bits wide.
    """
    header = b"GIF89a" + struct.pack("<HH", WIDTH, HEIGHT)
    header += bytes([0x80 if colour_table else 0x00, 0, 0])
    if colour_table:
        header += bytes([0, 0, 0, 255, 255, 255])
    codes = []  # code size 2: clear = 4, end = 5
    for pixel in range(HEIGHT * WIDTH):
        codes += [4, pixel % 2]
    packed = sum(code << (3 * i) for i, code in enumerate([*codes, 5]))
    data = packed.to_bytes((3 * (len(codes) + 1) + 7) // 8, "little")
    blocks = b"".join(
        bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)
    )
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, WIDTH, HEIGHT) + b"\x00\x02" + blocks + b"\x00"
    return header + frame + b"\x3b"


def test_a_hand_made_gif_decodes_to_its_colour_table(decode):
    stripes = np.tile([0.0, 255.0], (HEIGHT, WIDTH // 2))
    image = decode([crafted_gif(True)])[0]
    np.testing.assert_array_equal(image, np.repeat(stripes[..., None], 3, axis=-1))


NOT_AN_IMAGE = "not a JPEG, PNG, GIF, BMP or WebP image, nor base64 text of one"
UNSUPPORTED_BMP = "unsupported BMP: only uncompressed 8-, 24- and 32-bit"


def bad_inputs(photo) -> dict[str, tuple[bytes, str]]:
    """Bad elements and the reason the error must give."""
    from PIL import Image

    files = formats(photo)
    jpeg, png, gif, bmp = files["jpeg"], files["png"], files["gif"], files["bmp"]
    animated = io.BytesIO()
    Image.fromarray(photo).save(
        animated, "WEBP", save_all=True, append_images=[Image.fromarray(255 - photo)]
    )
    sof = jpeg.index(b"\xff\xc0")
    return {
        "empty": (b"", "empty string: no image bytes"),
        "html": (b"<html><body>Not found</body></html>", "not a JPEG, PNG, GIF, BMP or WebP"),
        # A non-image is described by its format, never quoted (a key or a password file
        # read by mistake must not show in logs or dead letters).
        "text": (b"hello, world", NOT_AN_IMAGE + ": 12 bytes (text)"),
        "password file": (b"root:*:20228:0:99999:7:::\n", NOT_AN_IMAGE + ": 26 bytes (text)"),
        "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", NOT_AN_IMAGE + ": 15 bytes (PDF document)"),
        "zeros": (b"\x00" * 4096, NOT_AN_IMAGE + ": 4096 bytes (zero bytes)"),
        "binary": (bytes([1, 2, 250, 255]) * 4, NOT_AN_IMAGE + ": 16 bytes (unknown format)"),
        "base64 of text": (
            base64.b64encode(b"just some text"),
            NOT_AN_IMAGE + ": 20 bytes (text)",
        ),
        "base64 bad length": (base64.b64encode(png[:300]) + b"Q", NOT_AN_IMAGE + ": 401 bytes"),
        "jpeg cut in the data": (
            jpeg[: len(jpeg) * 2 // 3],
            "truncated JPEG: the data ends before",
        ),
        "jpeg cut in the header": (jpeg[: sof + 4], "truncated JPEG"),
        "jpeg magic only": (b"\xff\xd8\xff", "truncated JPEG"),
        "jpeg bad marker": (jpeg[:20] + b"\x00" * 40 + jpeg[60:], "corrupt or unsupported JPEG"),
        "jpeg lossless": (patched(jpeg, sof, ">H", 0xFFC3), "corrupt or unsupported JPEG"),
        "jpeg 12-bit": (patched(jpeg, sof + 4, ">B", 12), "corrupt or unsupported JPEG"),
        "png cut": (png[: len(png) // 2], "truncated PNG: the data ends before"),
        "png without IEND": (png[:-12], "truncated PNG: the data ends before"),
        "png header only": (png[:20], "truncated PNG"),
        "png bad first chunk": (patched(png, 12, "4s", b"IDAT"), "corrupt or unsupported PNG"),
        "gif cut": (gif[: len(gif) // 2], "truncated GIF: the data ends before"),
        "gif without colours": (crafted_gif(False), "corrupt or unsupported GIF"),
        "bmp cut": (bmp[:-100], "truncated BMP"),
        "bmp 16-bit": (patched(bmp, 28, "<H", 16), UNSUPPORTED_BMP),
        "bmp compressed": (patched(bmp, 30, "<I", 1), UNSUPPORTED_BMP),
        "bmp os2 header": (patched(bmp, 14, "<I", 12), UNSUPPORTED_BMP),
        "webp cut": (files["lossless webp"][:-50], "truncated WebP"),
        "animated webp": (animated.getvalue(), "animated WebP is not supported"),
    }


BAD = [
    "empty", "html", "text", "password file", "pdf", "zeros", "binary", "base64 of text",
    "base64 bad length", "jpeg cut in the data",
    "jpeg cut in the header", "jpeg magic only", "jpeg bad marker", "jpeg lossless", "jpeg 12-bit",
    "png cut", "png without IEND", "png header only", "png bad first chunk", "gif cut",
    "gif without colours", "bmp cut", "bmp 16-bit", "bmp compressed", "bmp os2 header",
    "webp cut", "animated webp",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD)
def test_bad_elements_fail_with_their_index_and_reason(decode, photo, name):
    data, reason = bad_inputs(photo)[name]
    good = formats(photo)["jpeg"]
    message = decode_error(decode, [good, good, data, good])
    assert f"image_bytes[2]: {reason}" in message, message


def test_with_several_bad_elements_the_error_names_one_of_them(decode, photo):
    good = formats(photo)["png"]
    message = decode_error(decode, [good, b"", good, b"junk!"])
    # Elements decode in parallel: either bad one may be reported first.
    assert "image_bytes[1]: empty string" in message or "image_bytes[3]: not a" in message


def test_jpeg_dct_scale_keeps_twice_the_model_resolution_like_pil_draft():
    from PIL import Image

    from keras_vit.decode import jpeg_scale_ratio

    target = (32, 32)
    for height, width in [(64, 64), (130, 200), (300, 451), (600, 400), (3000, 4000), (600, 65)]:
        jpeg = encode(Image.new("RGB", (width, height), (90, 120, 30)), "JPEG")
        image = Image.open(io.BytesIO(jpeg))
        image.draft("RGB", (2 * target[1], 2 * target[0]))
        pil_ratio = next(r for r in (8, 4, 2, 1) if (-(-width // r), -(-height // r)) == image.size)
        ratio = int(jpeg_scale_ratio(height, width, target))
        assert ratio == pil_ratio, (height, width)
        assert -(-height // ratio) >= 2 * target[0] or ratio == 1
        assert -(-width // ratio) >= 2 * target[1] or ratio == 1


def test_reduced_scale_decoding_stays_close_to_a_full_size_resize(decode, photos):
    import tensorflow as tf

    from keras_vit.decode import jpeg_scale_ratio

    jpeg = encode(photos["astronaut"], "JPEG", quality=95)
    assert int(jpeg_scale_ratio(512, 512, (HEIGHT, WIDTH))) == 4
    full = tf.image.resize(pil_rgb(jpeg), (HEIGHT, WIDTH), antialias=True).numpy()
    assert np.abs(decode([jpeg])[0] - full).mean() < 2.0


def test_corrupt_compressed_data_is_named_by_its_index(decode, photo):
    png = bytearray(formats(photo)["png"])
    idat = png.index(b"IDAT")
    png[idat + 40] ^= 0xFF  # the header is fine; zlib or the CRC check fails in the decoder
    message = decode_error(decode, [formats(photo)["jpeg"], bytes(png)])
    assert (
        "image_bytes[1]: corrupt or unsupported PNG: the TensorFlow decoder rejects it" in message
    )


def test_reasons_say_when_the_bytes_were_base64_text(decode, photo):
    jpeg = formats(photo)["jpeg"]
    message = decode_error(decode, [base64.b64encode(jpeg[: len(jpeg) // 2])])
    assert "image_bytes[0]: truncated JPEG: the data ends before the image does (after " in message
    assert "decoding base64 text)" in message


def test_the_request_pixel_budget_counts_every_image(photo):
    import tensorflow as tf

    from keras_vit.decode import decode_images

    png = encode(np.zeros((500, 800, 3), np.uint8), "PNG")  # 400,000 pixels
    fn = tf.function(
        lambda x: decode_images(
            x, (HEIGHT, WIDTH), max_pixels=500_000, max_request_pixels=1_000_000
        ),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )
    assert fn(tf.constant([png, png])).shape == (2, HEIGHT, WIDTH, 3)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        fn(tf.constant([png, png, png]))
    assert (
        "image_bytes[2]: the images of this request add up to 1200000 pixels with this one, "
        "more than the limit of 1000000 per request" in caught.value.message
    )
    # A JPEG counts the pixels of the DCT scale it is decoded at: 1000x1000 at 1/4 here.
    jpeg = encode(np.zeros((1000, 1000, 3), np.uint8), "JPEG")
    big = tf.function(
        lambda x: decode_images(
            x, (HEIGHT, WIDTH), max_pixels=1_000_000, max_request_pixels=300_000
        ),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )
    assert big(tf.constant([jpeg] * 4)).shape == (4, HEIGHT, WIDTH, 3)


def gif_with_sub_blocks(photo, sizes) -> bytes:
    """The test GIF with a comment extension of sub-blocks of ``sizes`` bytes before its frame."""
    from PIL import Image

    gif = encode(Image.fromarray(photo).convert("P", palette=Image.ADAPTIVE), "GIF")
    start = 13 + (3 * 2 ** (gif[10] % 8 + 1) if gif[10] & 0x80 else 0)
    comment = b"".join(bytes([size]) + b"x" * size for size in sizes)
    return gif[:start] + b"\x21\xfe" + comment + b"\x00" + gif[start:]


def test_a_flood_of_gif_sub_blocks_is_answered_fast(decode, photo):
    # 3 MB of one-byte comment sub-blocks: the old block walk took 40 s on a server.
    import time

    flood = gif_with_sub_blocks(photo, [1] * 1_500_000)
    started = time.perf_counter()
    pixels = decode([flood])[0]
    assert time.perf_counter() - started < 5.0
    # A comment does not change the frame: PIL's pixels of the same GIF with an empty one.
    # (Pillow 12, which apache-beam 2.77 pins below 13, takes minutes to walk the flood.)
    np.testing.assert_array_equal(pixels, pil_rgb(gif_with_sub_blocks(photo, [])))
    # Sub-blocks of changing sizes cannot be crossed in runs: refused after a bounded walk.
    mixed = gif_with_sub_blocks(photo, [1, 2] * 300_000)
    started = time.perf_counter()
    assert "unsupported GIF: more than 1024 runs of blocks" in decode_error(decode, [mixed])
    assert time.perf_counter() - started < 5.0


def test_frames_after_the_first_are_never_decoded(decode, photo):
    from PIL import Image

    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    data = bytearray(buffer.getvalue())
    second = data.index(b"\x2c", data.index(b"\x2c") + 20 + len(data) // 3)
    data[second + 5 : second + 9] = struct.pack("<HH", 65535, 65535)  # a bomb as frame 2
    np.testing.assert_array_equal(decode([bytes(data)])[0], decode([buffer.getvalue()])[0])


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding(decode, photo):
    # Each scan of a progressive JPEG makes libjpeg pass over the whole image.
    jpeg = formats(photo)["progressive jpeg"]
    last_scan = jpeg[jpeg.rindex(b"\xff\xda") : -2]
    assert decode([jpeg[:-2] + last_scan * 80 + jpeg[-2:]]).shape == (1, HEIGHT, WIDTH, 3)
    many = jpeg[:-2] + last_scan * 120 + jpeg[-2:]
    scans = many.count(b"\xff\xda")
    assert f"image_bytes[0]: unsupported JPEG: {scans} scans, more than the 100 accepted" in (
        decode_error(decode, [many])
    )


def test_the_first_frame_cut_keeps_what_tf_decodes_from_the_whole_file(decode, photo):
    # Extensions are dropped before TF's decoder, except the frame's graphic control
    # (transparency): TF's own decode of the untouched file is the reference.
    import tensorflow as tf
    from PIL import Image

    image = Image.fromarray(photo).convert("P", palette=Image.ADAPTIVE)
    transparent = encode(image, "GIF", transparency=int(np.asarray(image)[0, 0]), comment=b"hi")
    assert b"\x21\xf9\x04" in transparent
    animated = io.BytesIO()
    image.save(animated, "GIF", save_all=True, append_images=[image.rotate(90)], loop=0)
    for data in (transparent, animated.getvalue(), gif_with_sub_blocks(photo, [7] * 5000)):
        expected = tf.io.decode_gif(data)[0].numpy()
        np.testing.assert_array_equal(decode([data])[0], expected)


def test_decode_batch_gives_per_image_outcomes_and_can_fail_fast(photo):
    import tensorflow as tf

    from keras_vit.decode import decode_batch

    good = formats(photo)["png"]
    batch = tf.constant([good, b"", good])
    pixels, reasons = decode_batch(batch, (HEIGHT, WIDTH))
    assert [r.decode() for r in reasons.numpy()] == ["", "empty string: no image bytes", ""]
    np.testing.assert_array_equal(pixels[2], pil_rgb(good))
    # The signatures fail the whole request: then nothing is decoded after a bad header.
    pixels, reasons = decode_batch(batch, (HEIGHT, WIDTH), fail_fast=True)
    assert reasons.numpy()[1] and not pixels.numpy().any()


def test_the_graph_describes_non_images_as_serving_file_formats_does():
    """The exported decoder and the Python readers name a non-image's format the same way,
    and neither shows its bytes."""
    import tensorflow as tf

    from keras_vit import decode
    from serving import file_formats

    samples = [b"hello, world", b"root:*:20228:0:99999:7:::\n", "héllo wörld".encode()]
    samples += [magic + b"\x01\x02rest of the file" for _, _, magic in file_formats.SIGNATURES]
    samples += [b"\x00\x00\x00\x20ftypheic" + bytes(8), b"\x00" * 64, bytes([1, 2, 250, 255])]
    samples += [b"\x00\x00\x01", b"M", b"x"]
    described = decode._describe(tf.constant(samples)).numpy()
    for data, name in zip(samples, described, strict=True):
        assert name.decode() == file_formats.describe(data), data
    names = {name for name, _, _ in file_formats.SIGNATURES}
    assert names <= {n.decode() for n in described}  # every signature is recognised
    assert not any(b"root" in n or b"hello" in n for n in described)
