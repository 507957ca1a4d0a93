"""The cyclic garbage collector paused while a trace, a dump or a comparison runs.

Each of them builds one or more objects per node (tuples, dicts, frozen dataclasses) and
keeps all of them until it returns, so nothing it makes is garbage before it ends. CPython
still runs its collector every few hundred new objects, and every so often scans the old
generation, which holds all of torch's own objects: on a graph of ten thousand ops those
scans make the cost grow faster than the graph. Pausing the collector for the call, and
putting it back as it was (also when the call raises), keeps the cost linear.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def gc_paused(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` with the cyclic collector off while it runs, and as it was after."""

    @functools.wraps(function)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        if not gc.isenabled():  # off already (a caller paused it): leave it to the caller
            return function(*args, **kwargs)
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            gc.enable()

    return paused
