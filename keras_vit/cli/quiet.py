"""Keeps TensorFlow's C++ start-up lines off the command line.

Importing TensorFlow writes lines such as ``I0000 ... oneDNN custom operations
are on``, ``Could not find cuda drivers`` and ``WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR`` before its own
log level is read, so ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide them (TF
2.21); the first device set-up then logs ``E0000 ... failed call to cuInit``
on machines without a GPU, which that variable does hide at level 3.

So, unless the user asked for them (``keras-vit --verbose`` or their own
``TF_CPP_MIN_LOG_LEVEL``): the level is set to 3 and TensorFlow is imported
while the process's stderr (file descriptor 2, where C++ writes) goes to a
temporary file; afterwards every line of it that is not such a log line is
written back to stderr, so a Python warning or error of the import still shows.
"""

from __future__ import annotations

import os
import sys

from keras_vit import quiet
from keras_vit.quiet import filtered_stderr


def quiet_tensorflow(verbose: bool = False) -> bool:
    """Imports TensorFlow without its C++ start-up lines; returns whether it filtered.

    Does nothing (and returns False) when ``verbose``, when the user set
    ``TF_CPP_MIN_LOG_LEVEL`` themselves, or when TensorFlow is already imported.
    """
    if verbose:
        quiet.uninstall()
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # hides the later cuInit error line too
    with filtered_stderr():
        import tensorflow as tf

        # The first device query initialises the platforms (cuInit) while filtered.
        tf.config.list_physical_devices()
    return True
