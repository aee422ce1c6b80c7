"""What the code that called us does with the result: is it about to await it?

aiodiskqueue 0.1's `get_nowait()` was a coroutine, so 0.1 code writes
``item = await queue.get_nowait()``. Since 0.2 it returns the item itself, and awaiting the
item raises `TypeError` after the item has left the queue: it would be lost. `Queue` asks this
module first, and refuses such a call before it changes anything.

The answer is read from the caller's bytecode: the instruction after the call is
``GET_AWAITABLE``. It is cached per call site, so asking costs a dictionary look-up.
"""

from __future__ import annotations

import dis
import functools
import sys
from types import CodeType

__all__ = ["result_is_awaited"]


def result_is_awaited(depth: int = 2) -> bool:
    """True if the caller `depth` frames up awaits the result of the call it is making.

    With the default, a function asks about its own caller.
    """
    frame = sys._getframe(depth)
    return _awaits_after(frame.f_code, frame.f_lasti)


@functools.lru_cache(maxsize=4096)
def _awaits_after(code: CodeType, last_instruction: int) -> bool:
    # The last instruction is the call (or, from Python 3.11 on, its last inline cache
    # entry): the next real instruction says what happens to its result.
    following = (each for each in dis.get_instructions(code) if each.offset > last_instruction)
    return next((each.opname for each in following), None) == "GET_AWAITABLE"
