"""Server error texts made readable: TensorFlow's graph notes removed, the blamed image found.

A SavedModel's decoder fails a whole request for one bad image, with a message such as::

    assertion failed: [image_bytes[1]: not a JPEG, PNG, GIF, BMP or WebP image, nor base64
    text of one]\\n\\t [[{{function_node decode_images_while_cond_1_false_2457}}{{node ...}}]]

:func:`clean_message` keeps ``image_bytes[1]: not a JPEG, ...``; :func:`blamed_image`
finds the position (``1``) and the reason. TF Serving's REST layer names an element
of ``instances`` as ``Failed to process element: 1 ...``.

>>> text = "assertion failed: [image_bytes[1]: truncated PNG]\\n\\t [[{{node x}}]]"
>>> clean_message(text)
'image_bytes[1]: truncated PNG'
>>> blamed_image(clean_message(text), 3)
(1, 'truncated PNG')
"""

from __future__ import annotations

import re

from serving.file_formats import unquote

# TF appends where in the graph an op failed: "\n\t [[{{function_node f}}{{node n}}]]",
# and in eager mode which function ran: " [Op:__inference_f_10]".
_GRAPH_NOTE = re.compile(r"\s*\[\[\{\{.*?\}\}\]\]|\s*\[Op:[^\]]*\]", re.DOTALL)
# tf.debugging.Assert / tf.Assert: "assertion failed: [data] [more data]".
_ASSERTION = re.compile(r"^assertion failed: \[(?P<data>.*)\]$", re.DOTALL)
# Eager TF adds the Python stack of the failing op before the message.
_TRACEBACK = re.compile(
    r"Graph execution error:\s*Detected at node .*?\(most recent call last\):\n(?:(?:  .*)?\n)*"
)
_INPUT_ELEMENT = re.compile(
    r"^(?P<input>[A-Za-z_][\w/.-]*)\[(?P<index>\d+)\]: (?P<reason>.+)$", re.DOTALL
)
_REST_ELEMENT = re.compile(r"^Failed to process element: (?P<index>\d+)\b")
# The decoder tried the bytes as base64 text too. The client always sends an image's raw
# bytes (REST's {"b64": ...} is only the transport), so for the user they are not an image.
_BASE64_FALLBACK = re.compile(r"^base64 text that decodes to \d+ bytes that are not (?P<what>.+)$")


def clean_message(text: str) -> str:
    """The server's message without TensorFlow's graph locations, stack and assert wrapper,
    and without any file content an older export quotes (``12 bytes starting `...```).

    >>> clean_message("image_bytes[0]: not a JPEG ...: 25 bytes starting `root:*:20228:0:9...`")
    'image_bytes[0]: not a JPEG ...: 25 bytes (content not shown)'
    """
    text = _TRACEBACK.sub("", _GRAPH_NOTE.sub("", text)).strip()
    match = _ASSERTION.match(text)
    if match:
        text = match["data"].replace("] [", " ").strip()
    return unquote(text)


def blamed_image(message: str, count: int) -> tuple[int, str] | None:
    """``(position in the request, reason)`` when the message blames one of ``count`` images."""
    match = _INPUT_ELEMENT.match(message)
    if match and int(match["index"]) < count:
        return int(match["index"]), image_reason(match["reason"])
    match = _REST_ELEMENT.match(message)
    if match and int(match["index"]) < count:
        # "Failed to process element: 2 key: ... of 'instances' list. Error: <reason>"
        _, found, reason = message.partition("Error: ")
        return int(match["index"]), image_reason(reason.strip() if found else message)
    return None


def image_reason(reason: str) -> str:
    """The decoder's reason, worded for the raw file bytes the client sent."""
    match = _BASE64_FALLBACK.match(reason)
    if match:
        return f"not {match['what']}, nor base64 text of one"
    return reason
