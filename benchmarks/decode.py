"""The image decoder of the exported signatures (keras_vit/decode.py): cost per request, GIF flood.

Peers, in the same run: ``plain TF`` (``tf.map_fn`` of ``decode_jpeg`` + antialiased
resize, no checks at all: the floor) and, with ``--baseline FILE``, another version
of ``keras_vit/decode.py`` (e.g. ``git show REV:keras_vit/decode.py > old.py``).

    .venv/bin/python -m benchmarks.decode --baseline /tmp/old_decode.py
    .venv/bin/python -m benchmarks.decode --quick    # 640x480 only, 3 rounds, small floods

Writes ``benchmarks/results/decode.md`` (``decode-quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import time

from benchmarks.harness import (
    Stats,
    add_output_options,
    calibrate,
    machine_info,
    markdown_table,
    results_path,
    run_interleaved,
    write_results,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SIZE = (224, 224)


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("baseline_decode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled(module):
    import tensorflow as tf

    return tf.function(
        lambda x: module.decode_images(x, SIZE),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )


def plain_tf():
    import tensorflow as tf

    def one(data):
        image = tf.io.decode_jpeg(data, channels=3)
        return tf.image.resize(image, SIZE, antialias=True)

    return tf.function(
        lambda x: tf.map_fn(one, x, fn_output_signature=tf.TensorSpec([*SIZE, 3], tf.float32)),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )


def encode_jpeg(height: int, width: int) -> bytes:
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((width, height))
    noise = np.random.default_rng(0).integers(0, 8, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(photo) + noise).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def flood_gif(sub_blocks: int, sizes=(1,)) -> bytes:
    """A 32x32 GIF with a comment of ``sub_blocks`` sub-blocks (sizes cycling) before its frame."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("P").save(buffer, "GIF")
    gif = buffer.getvalue()
    start = 13 + (3 * 2 ** (gif[10] % 8 + 1) if gif[10] & 0x80 else 0)
    blocks = b"".join(bytes([s]) + b"x" * s for s in sizes)
    comment = blocks * (sub_blocks // len(sizes))
    return gif[:start] + b"\x21\xfe" + comment + b"\x00" + gif[start:]


def time_once(fn, data: bytes) -> tuple[float, str]:
    import tensorflow as tf

    started = time.perf_counter()
    try:
        fn(tf.constant([data]))
        answer = "decoded"
    except tf.errors.InvalidArgumentError as error:
        reason = error.message.split("assertion failed: [", 1)[-1].split("]\n")[0]
        answer = "INVALID_ARGUMENT: " + reason[:100]
    return time.perf_counter() - started, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="another keras_vit/decode.py to compare with")
    parser.add_argument("--rounds", type=int, default=None, help="7 (--quick: 3)")
    parser.add_argument("--baseline-flood", type=int, default=50_000, help="its GIF sub-blocks")
    add_output_options(parser, "decode", quick="640x480 only, 3 rounds, the 3 MB flood only")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 7)
    import tensorflow as tf

    from keras_vit import decode

    decoders = {"ours": compiled(decode), "plain TF": plain_tf()}
    if args.baseline:
        decoders["baseline"] = compiled(load_module(args.baseline))
    inputs = {"640x480 JPEG": encode_jpeg(480, 640)}
    if not args.quick:
        inputs["4000x3000 JPEG"] = encode_jpeg(3000, 4000)
    cases, calls = {}, {}
    for input_name, jpeg in inputs.items():
        for batch in (1, 8):
            batch_tensor = tf.constant([jpeg] * batch)
            for name, fn in decoders.items():
                key = f"{input_name} x{batch} | {name}"
                cases[key] = lambda fn=fn, x=batch_tensor: fn(x).numpy()
                cases[key]()
                calls[key] = calibrate(cases[key], target_s=0.3, max_calls=50)
    budget = 60 if args.quick else 240
    timings = run_interleaved(cases, calls, rounds=args.rounds, min_rounds=3, budget_s=budget)
    rows = []
    for key, samples in timings.items():
        wall = Stats.from_rates([1000 * t.wall for t in samples])
        cpu = Stats.from_rates([1000 * t.cpu for t in samples])
        rows.append([*key.split(" | "), wall.format(1), cpu.format(1)])
    table = markdown_table(["request", "decoder", "wall ms [IQR]", "CPU ms [IQR]"], rows)

    floods = [
        ("3 MB: 1.5 M one-byte sub-blocks", flood_gif(1_500_000), decoders["ours"]),
        ("9 MB: 4.5 M one-byte sub-blocks", flood_gif(4_500_000), decoders["ours"]),
        ("1.8 MB: 600 k sub-blocks of 1 and 2 bytes", flood_gif(600_000, (1, 2)), decoders["ours"]),
    ]
    if args.quick:
        floods = floods[:1]
    if args.baseline:
        floods.append(
            (
                f"baseline, {args.baseline_flood * 2 / 1e6:.1f} MB: "
                f"{args.baseline_flood // 1000} k one-byte sub-blocks",
                flood_gif(args.baseline_flood),
                decoders["baseline"],
            )
        )
    flood_rows = []
    for name, data, fn in floods:
        time_once(fn, flood_gif(10))  # warm
        seconds, answer = min(time_once(fn, data) for _ in range(3))
        flood_rows.append([name, f"{seconds:.2f}", answer])
    body = (
        f"Decode + resize to {SIZE[0]}x{SIZE[1]} per request (median of {args.rounds} "
        "interleaved rounds; lower is better):\n\n"
        + table
        + "\n\nGIF with a flood of comment sub-blocks before its frame (best of 3, one "
        "request of one image):\n\n"
        + markdown_table(["file", "seconds", "answer"], flood_rows)
        + "\n"
    )
    info = machine_info(["tensorflow", "pillow"])
    path = write_results(results_path(args), "Image decoder cost", info, body)
    print(body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
