"""The int8 runtime candidates side by side: model only, ViT-B/16, same run.

Uses ``python -m benchmarks.precision``'s cache (run it first): the random ViT-B/16
checkpoint, its ONNX export (``torch.onnx.export``, Optimum's route) and the
calibration photos. Candidates, each fed float 224x224 pixels:

- ``ORT dynamic int8``: Optimum's avx512_vnni dynamic recipe (the cache's model);
- ``ORT static QDQ int8``: ``onnxruntime.quantization.quantize_static``, QDQ
  format, per-channel int8 weights, int8 symmetric activations, MinMax
  calibration on the same photos;
- ``OpenVINO int8, Keras graph as is``: NNCF (mixed preset, its transformer
  default) on ``openvino.convert_model`` of the Keras model's plain trace;
- ``OpenVINO int8, fused forms`` (what ``export --precision int8`` writes).

Our Keras model has no ONNX route on TF 2.21 (``precision.py`` reports why), so
the ORT candidates run the PyTorch twin of the same checkpoint.

    .venv/bin/python -m benchmarks.int8_candidates [--rounds 5]

Writes ``benchmarks/results/int8-candidates.md`` (``--out`` to change it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks.harness import (
    ROOT,
    add_output_options,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE = ROOT / "benchmarks" / ".cache" / "precision"


def calibration_pixels():
    import io

    import numpy as np
    from PIL import Image

    from benchmarks.precision import calibration_jpegs

    return np.stack(
        [
            np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((224, 224)))
            for jpeg in calibration_jpegs()
        ]
    ).astype(np.float32)


def ort_static(fp32: str, target: str, pixels) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"images": pixels[i : i + 1]} for i in range(len(pixels)))

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        fp32, target, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    add_output_options(parser, "int8-candidates")
    args = parser.parse_args(argv)

    import nncf
    import numpy as np
    import onnxruntime as ort
    import openvino as ov

    from keras_vit.loading import load_pretrained
    from serving import int8_export
    from serving.int8_runtime import openvino_threads

    started = time.perf_counter()
    pixels = calibration_pixels()
    static = CACHE / "vit_int8_static_qdq.onnx"
    setup = {}
    begin = time.perf_counter()
    ort_static(str(CACHE / "vit_fp32.onnx"), str(static), pixels)
    setup["ORT static QDQ int8"] = time.perf_counter() - begin
    model = load_pretrained(str(CACHE / "checkpoint"))
    begin = time.perf_counter()
    plain = int8_export.quantized_body(
        model, pixels, fused=False, preset=nncf.QuantizationPreset.MIXED
    )
    setup["OpenVINO int8, Keras graph as is"] = time.perf_counter() - begin
    begin = time.perf_counter()
    fused = int8_export.quantized_body(model, pixels)
    setup["OpenVINO int8, fused forms"] = time.perf_counter() - begin
    del model

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {
        "ORT dynamic int8 (Optimum)": ort.InferenceSession(
            str(CACHE / "vit_int8.onnx"), options, providers=["CPUExecutionProvider"]
        ),
        "ORT static QDQ int8": ort.InferenceSession(
            str(static), options, providers=["CPUExecutionProvider"]
        ),
    }
    core = ov.Core()
    requests = {
        name: core.compile_model(m, "CPU", openvino_threads(0)).create_infer_request()
        for name, m in (
            ("OpenVINO int8, Keras graph as is", plain),
            ("OpenVINO int8, fused forms (ours)", fused),
        )
    }
    cases = {}
    for batch in args.batch_sizes:
        x = pixels[np.arange(batch) % len(pixels)]
        for name, session in sessions.items():
            cases[(name, batch)] = lambda s=session, x=x: s.run(None, {"images": x})
        for name, request in requests.items():
            cases[(name, batch)] = lambda r=request, x=x: r.infer({0: x})
    for fn in cases.values():
        fn()
        fn()
    rates = {key: [] for key in cases}
    keys = list(cases)
    for round_ in range(args.rounds):
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            begin = time.perf_counter()
            cases[key]()
            cases[key]()
            rates[key].append(2 * key[1] / (time.perf_counter() - begin))
    rows = []
    for batch in args.batch_sizes:
        base = statistics.median(rates[("ORT dynamic int8 (Optimum)", batch)])
        for name in [k[0] for k in keys if k[1] == batch]:
            values = rates[(name, batch)]
            median = statistics.median(values)
            rows.append(
                [name, batch, f"{median:.2f} [{min(values):.2f}–{max(values):.2f}]",
                 f"{median / base:.2f}", f"{setup.get(name.replace(' (ours)', ''), 0):.0f}"]
            )  # fmt: skip
    load = os.getloadavg()
    body = [
        "ViT-B/16, random weights (`benchmarks/precision.py`'s checkpoint), float 224x224 "
        f"pixels in, logits out; {args.rounds} interleaved rounds of two calls per case, "
        "img/s medians [min–max]; each library's default threads (all cores). The machine "
        f"is shared: load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"on {os.cpu_count()} CPUs. Calibration: {len(pixels)} photo views (the same for "
        "every static scheme).",
        "",
        markdown_table(
            ["candidate", "batch", "img/s", "× ORT dynamic int8", "quantization s"], rows
        ),
        f"\nTotal {time.perf_counter() - started:.0f} s.",
    ]
    info = machine_info(["onnxruntime", "openvino", "nncf", "tensorflow"])
    path = write_results(results_path(args), "int8 runtime candidates", info, "\n".join(body))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
