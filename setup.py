from pathlib import Path

from setuptools import find_packages, setup


def _requirements(name):
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [line for line in lines if line and not line.startswith(("#", "-r"))]


setup(
    name="keras-vit",
    version="0.1.0",
    description="Vision Transformers in Keras 3: from checkpoint to TF Serving.",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_vit", "keras_vit.*", "serving", "serving.*"]),
    # The ImageNet-1k labels and the ui page: package_data alone says which data files go in
    # (MANIFEST.in lists them for the sdist). include_package_data would take them from
    # MANIFEST.in as well, and setuptools then warns that the folder keras_vit/data (no
    # __init__.py) is an importable package absent from `packages`.
    include_package_data=False,
    package_data={"keras_vit": ["data/*.json"], "keras_vit.ui": ["page.html"]},
    install_requires=_requirements("requirements.txt"),
    extras_require={
        "dev": _requirements("requirements-dev.txt"),
        "vertex": ["google-cloud-aiplatform>=2.7"],
        # keras-vit evaluate / explain: metrics, plots, progress bar.
        "evaluate": ["scikit-learn>=1.4", "matplotlib>=3.8", "tqdm>=4.66"],
        # keras-vit ui: the page is served by tornado (requirements.txt); overlays use
        # matplotlib's colormaps.
        "ui": ["matplotlib>=3.8"],
        # keras-vit batch-predict (docs/batch.md). Beam 2.77 needs protobuf < 7, and
        # grpcio-health-checking >= 1.82 needs protobuf >= 7: 1.81 is the newest that fits.
        "batch": ["apache-beam==2.77.*", "pyarrow>=14", "grpcio-health-checking<1.82"],
    },
    entry_points={"console_scripts": ["keras-vit=keras_vit.cli:main"]},
)
