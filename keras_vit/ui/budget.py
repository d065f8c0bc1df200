"""The upload bytes all requests in flight may hold together.

An upload reserves its declared ``Content-Length`` before its body is read and
keeps it until its answer is sent (or its connection drops): the bytes it can
hold while it arrives, waits for the model and is answered. Past the budget a
request is refused at once (503), so many large uploads at once cannot take the
machine's memory.

Used from the page's event loop only (one thread), so it takes no lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Reservation:
    size: int
    released: bool = False


class UploadBudget:
    """At most ``max_bytes`` of uploads in flight.

    >>> budget = UploadBudget(max_bytes=100)
    >>> first = budget.reserve(60)
    >>> budget.reserve(50) is None
    True
    >>> print(budget.refusal(50))  # doctest: +NORMALIZE_WHITESPACE
    the page is busy: 60 bytes of uploads in flight and this one is 50 bytes,
    over the 100-byte budget (--upload-budget-mib); try again in a moment
    >>> budget.release(first), budget.in_use_bytes
    (True, 0)
    >>> budget.release(first)  # a second release does nothing
    False
    """

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"the upload budget must be positive, got {max_bytes} bytes")
        self.max_bytes = max_bytes
        self.in_use_bytes = 0
        self.in_flight = 0

    def reserve(self, size: int) -> Reservation | None:
        """A reservation of ``size`` bytes, or None when it does not fit now."""
        if self.in_use_bytes + size > self.max_bytes:
            return None
        self.in_use_bytes += size
        self.in_flight += 1
        return Reservation(size)

    def release(self, reservation: Reservation) -> bool:
        """Gives ``reservation`` back; False when it was already given back."""
        if reservation.released:
            return False
        reservation.released = True
        self.in_use_bytes -= reservation.size
        self.in_flight -= 1
        return True

    def refusal(self, size: int) -> str:
        """Why ``reserve(size)`` failed, for the 503 answer."""
        return (
            f"the page is busy: {self.in_use_bytes} bytes of uploads in flight and this one "
            f"is {size} bytes, over the {self.max_bytes}-byte budget (--upload-budget-mib); "
            "try again in a moment"
        )
