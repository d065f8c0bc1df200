"""What every checkpoint converter shares: named transforms, the strict diff, assignment.

A converter is a table of :class:`Row` s ``(keras variable path, source key,
transform name)``. :func:`plan_conversion` checks the whole table against the
checkpoint *before* anything is assigned and :class:`CheckpointMismatchError`
names every missing, unexpected and wrongly-shaped tensor at once (the way
vision_transformer's ``inspect_params`` does). Everything here is plain numpy.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Shape = tuple[int, ...]


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not match the model's variables (strict loading)."""


class Reader(Protocol):
    """Lists and reads the arrays of one checkpoint; knows nothing about models."""

    description: str

    def shapes(self) -> dict[str, Shape]:
        """Every tensor name with its shape, without reading the data."""

    def read(self, key: str) -> np.ndarray:
        """One tensor as a numpy array."""

    def close(self) -> None:
        """Releases open files."""


@dataclass(frozen=True)
class Row:
    """One line of a converter table: ``keras_path <- transform(checkpoint[source_key])``."""

    keras_path: str
    source_key: str
    transform: str = "identity"


@dataclass(frozen=True)
class Context:
    """What a transform may need beyond the two shapes.

    ``grid`` is the model's patch grid ``(rows, cols)``; ``resize_position_embedding``
    allows a position embedding trained on another grid (set when the caller
    asked for another ``image_size``).
    """

    grid: tuple[int, int] = (0, 0)
    resize_position_embedding: bool = False


@dataclass(frozen=True)
class Transform:
    """A named array transform with the source shape it expects for a given target shape.

    ``source_shape(target, context)`` returns the expected checkpoint shape
    (``None`` when any shape it can convert is acceptable, then ``accepts``
    decides); ``apply(array, target, context)`` returns the array in Keras layout.
    """

    name: str
    source_shape: Callable[[Shape, Context], Shape | None]
    apply: Callable[[np.ndarray, Shape, Context], np.ndarray]
    accepts: Callable[[Shape, Shape, Context], bool] | None = None

    def fits(self, source: Shape, target: Shape, context: Context) -> bool:
        expected = self.source_shape(target, context)
        if expected is not None:
            return tuple(source) == tuple(expected)
        return bool(self.accepts and self.accepts(tuple(source), target, context))


def _grid_of(length: int, prefix: int) -> tuple[int, int] | None:
    side = int(np.sqrt(max(length - prefix, 0)) + 0.5)
    return (side, side) if side * side == length - prefix and side > 0 else None


def _position_embedding(prefix_in_source: int) -> Transform:
    """Position embeddings ``(1, 1 + h*w, D)`` (``prefix_in_source=1``) or ``(1, h*w, D)``.

    The class-token slot of a checkpoint without one (big_vision adds its
    position embedding before concatenating the class token) becomes zeros,
    which is the same function. A different square grid is resized bicubically,
    class slot kept aside, when the context allows it.
    """

    def expected(target, context):
        if context.resize_position_embedding:
            return None  # any square grid with the right width; see ``accepts``
        return (1, target[1] - 1 + prefix_in_source, target[2])

    def accepts(source, target, context):
        return (
            len(source) == 3
            and source[0] == 1
            and source[2] == target[2]
            and _grid_of(source[1], prefix_in_source) is not None
        )

    def apply(array, target, context):
        if prefix_in_source == 0:
            # (1, h*w, D) -> (1, 1 + h*w, D): a zero embedding for the class token.
            array = np.concatenate([np.zeros_like(array[:, :1]), array], axis=1)
        if tuple(array.shape) != tuple(target):
            # The readers are plain numpy: Keras loads for a resize only.
            from keras_vit.layers import interpolate_position_embedding  # noqa: PLC0415

            # (1, 1 + h*w, D) -> (1, 1 + h'*w', D), bicubic on the grid only.
            array = interpolate_position_embedding(array, context.grid, num_prefix_tokens=1)
        return np.asarray(array)

    name = "position_embedding" if prefix_in_source else "position_embedding_without_class"
    return Transform(name, expected, apply, accepts)


def _same(target, context):
    return tuple(target)


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("identity", _same, lambda a, t, c: a),
        # PyTorch Linear weight (out, in) -> Keras Dense kernel (in, out).
        Transform("linear", lambda t, c: (t[1], t[0]), lambda a, t, c: a.T),
        # PyTorch Conv2d weight (O, I, H, W) -> Keras Conv2D kernel (H, W, I, O).
        Transform(
            "conv_oihw",
            lambda t, c: (t[3], t[2], t[0], t[1]),
            lambda a, t, c: a.transpose(2, 3, 1, 0),
        ),
        # Dense kernel (D, heads*head_dim) -> MHA query/key/value kernel (D, heads, head_dim).
        Transform("heads_kernel", lambda t, c: (t[0], t[1] * t[2]), lambda a, t, c: a.reshape(t)),
        # Dense bias (heads*head_dim,) -> MHA query/key/value bias (heads, head_dim).
        Transform("heads_bias", lambda t, c: (t[0] * t[1],), lambda a, t, c: a.reshape(t)),
        # Dense kernel (heads*head_dim, D) -> MHA output kernel (heads, head_dim, D).
        Transform(
            "heads_output_kernel", lambda t, c: (t[0] * t[1], t[2]), lambda a, t, c: a.reshape(t)
        ),
        # PyTorch Linear (heads*head_dim, D) -> .T (D, heads*head_dim) -> (D, heads, head_dim).
        Transform(
            "linear_heads_kernel",
            lambda t, c: (t[1] * t[2], t[0]),
            lambda a, t, c: a.T.reshape(t),
        ),
        # PyTorch Linear (D, heads*head_dim) -> .T (heads*head_dim, D) -> (heads, head_dim, D).
        Transform(
            "linear_heads_output_kernel",
            lambda t, c: (t[2], t[0] * t[1]),
            lambda a, t, c: a.T.reshape(t),
        ),
        _position_embedding(prefix_in_source=1),
        _position_embedding(prefix_in_source=0),
    )
}


@dataclass
class Plan:
    """The outcome of checking a converter table against a checkpoint."""

    assign: list[Row] = field(default_factory=list)
    skipped: list[Row] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[Row] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[Row, Shape, Shape]] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.uncovered)


def plan_conversion(
    variables: Mapping[str, Shape],
    source: Mapping[str, Shape],
    rows: Sequence[Row],
    *,
    skip: Iterable[str] = (),
    ignore: Callable[[str], bool] | None = None,
    context: Context = Context(),
) -> Plan:
    """Diffs a converter table against a model's variables and a checkpoint's tensors.

    ``skip``: Keras paths deliberately not loaded (a re-initialised head); their
    source keys are expected but neither required nor reported.
    ``ignore``: source keys known to be unused (e.g. HF's pooler).
    """
    skip = set(skip)
    plan = Plan()
    covered = {row.keras_path for row in rows}
    plan.uncovered = sorted(
        [path for path in variables if path not in covered]
        + [row.keras_path for row in rows if row.keras_path not in variables]
    )
    used = set()
    for row in rows:
        used.add(row.source_key)
        if row.keras_path in skip:
            plan.skipped.append(row)
            continue
        if row.source_key not in source:
            plan.missing.append(row)
            continue
        if row.keras_path not in variables:
            continue  # reported as uncovered
        target = tuple(variables[row.keras_path])
        transform = TRANSFORMS[row.transform]
        if not transform.fits(tuple(source[row.source_key]), target, context):
            expected = transform.source_shape(target, context) or target
            plan.mismatched.append((row, tuple(source[row.source_key]), tuple(expected)))
            continue
        plan.assign.append(row)
    for key in source:
        if key in used:
            continue
        if ignore is not None and ignore(key):
            plan.ignored.append(key)
        else:
            plan.unexpected.append(key)
    plan.unexpected.sort()
    return plan


def describe_plan(plan: Plan, variables: Mapping[str, Shape], source: Mapping[str, Shape]) -> str:
    """The human-readable list of everything that does not match."""
    lines = []
    if plan.missing:
        lines.append(
            f"{len(plan.missing)} missing (the model needs them, the checkpoint lacks them):"
        )
        for row in plan.missing:
            shape = tuple(variables.get(row.keras_path, ()))
            lines.append(f"    {row.source_key}  (for {row.keras_path} {shape})")
    if plan.unexpected:
        lines.append(
            f"{len(plan.unexpected)} unexpected (in the checkpoint, not used by the model):"
        )
        for key in plan.unexpected:
            lines.append(f"    {key} {tuple(source[key])}")
    if plan.mismatched:
        lines.append(f"{len(plan.mismatched)} wrongly shaped:")
        for row, got, expected in plan.mismatched:
            lines.append(
                f"    {row.source_key}: checkpoint {got}, expected {expected} "
                f"(for {row.keras_path} {tuple(variables[row.keras_path])})"
            )
    if plan.uncovered:
        lines.append(f"{len(plan.uncovered)} model variables without a converter row:")
        lines.extend(f"    {path}" for path in plan.uncovered)
    return "\n".join(lines)


def load_weights(
    model,
    reader: Reader,
    rows: Sequence[Row],
    *,
    skip: Iterable[str] = (),
    ignore: Callable[[str], bool] | None = None,
    context: Context = Context(),
    strict: bool = True,
    hint: Callable[[Plan], str] | None = None,
) -> Plan:
    """Checks ``rows`` against ``reader`` and assigns the tensors to ``model``'s variables.

    With ``strict`` (the default) nothing is assigned unless everything matches,
    and one :class:`CheckpointMismatchError` lists every problem. Without it,
    whatever matches is assigned and the rest is reported in a warning.
    ``hint(plan)`` may add advice to the error (e.g. how to replace a head).
    """
    variables = {v.path: v for v in model.weights}
    variable_shapes = {path: tuple(v.shape) for path, v in variables.items()}
    source = reader.shapes()
    plan = plan_conversion(variable_shapes, source, rows, skip=skip, ignore=ignore, context=context)
    if not plan.ok:
        report = describe_plan(plan, variable_shapes, source)
        if strict or plan.uncovered:
            message = f"{reader.description} does not match the model:\n{report}"
            advice = hint(plan) if hint else ""
            if advice:
                message += f"\n{advice}"
            if strict:
                message += "\nPass strict=False to load only the tensors that match."
            raise CheckpointMismatchError(message)
        warnings.warn(
            f"{reader.description}: loaded what matches; left as initialised or unused:\n{report}",
            stacklevel=3,
        )
    for row in plan.assign:
        variable = variables[row.keras_path]
        array = TRANSFORMS[row.transform].apply(
            np.asarray(reader.read(row.source_key)), tuple(variable.shape), context
        )
        # float32 first: bfloat16/float16 checkpoints arrive as ml_dtypes arrays that not
        # every backend converts directly; Keras then casts to the variable's dtype.
        variable.assign(np.asarray(array, dtype=np.float32))
    return plan


class ArrayReader:
    """A reader over arrays already in memory (a dict, or a Keras model's variables)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], description: str = "arrays"):
        self._arrays = dict(arrays)
        self.description = description

    def shapes(self) -> dict[str, Shape]:
        return {key: tuple(np.shape(value)) for key, value in self._arrays.items()}

    def read(self, key: str) -> np.ndarray:
        return np.asarray(self._arrays[key])

    def close(self) -> None:
        pass
