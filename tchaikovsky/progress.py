"""Progress: the one reporter of the package's progress bars and progress lines, and the one switch that quiets them.

Code that reports progress calls ``bar`` (a tqdm.auto bar: a widget in a notebook, text in a terminal) or ``say``
(a line on stdout, flushed); no function takes a ``progress`` flag. Whoever wants silence asks for it around the
work: ``with quiet(): ...`` (tests, a notebook cell that loads data it does not report, a benchmark's timed loop),
or ``TCHAIKOVSKY_QUIET=1`` in the environment for a headless run (a script, a Papermill run, CI).

The switch is a ``contextvars.ContextVar``: a ``quiet`` block sets it for the code it runs and restores the previous
value on exit, even after an exception. What other code sees follows the contextvars rules:
- an asyncio task, or a call run through ``contextvars.copy_context().run``, sees the value of the context it was
  created in (so a task started inside ``quiet()`` is quiet);
- a ``threading.Thread`` (and a ``concurrent.futures`` thread pool's worker) starts with a fresh context on Python
  < 3.14 (and on 3.14 unless ``sys.flags.thread_inherit_context`` is set): it does not see the block it was started
  in, only the environment;
- a worker process sees only the environment (which it inherits).
Bars and lines of the package are made in the calling thread, never in its worker processes or threads.

Warnings, notes a user must read (a cap that left files unread, shards made with other settings) and a command's
results are not progress: they are printed or warned as they are, quiet or not.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

ENV = "TCHAIKOVSKY_QUIET"  # "1" (or any value but "", "0", "false", "no"): quiet, unless a block says otherwise

# None: no block has decided in this context, the environment does
_QUIET: contextvars.ContextVar[bool | None] = contextvars.ContextVar("tchaikovsky_quiet", default=None)


def is_quiet() -> bool:
    """Whether bars and lines are silenced here: by the innermost ``quiet`` block of this context, else by ``ENV``."""
    value = _QUIET.get()
    if value is None:
        return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")
    return value


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """Silence (``on``, the default) or allow (``quiet(False)``, e.g. one bar a test wants to see, or a loud part of a
    run quieted by ``ENV``) the package's bars and lines for the code this block runs; the previous state returns on
    exit."""
    token = _QUIET.set(bool(on))
    try:
        yield
    finally:
        _QUIET.reset(token)


def bar(iterable: Iterable | None = None, **tqdm_kwargs) -> tqdm:
    """A ``tqdm.auto`` progress bar over ``iterable`` (or updated by hand: ``total=``, ``update``, ``close``), with
    ``tqdm_kwargs`` as tqdm takes them (``desc``, ``unit``, ``total``, ...); disabled (it still iterates, and
    ``update``/``set_postfix`` do nothing) when quiet where it is made."""
    if is_quiet():
        tqdm_kwargs["disable"] = True
    return tqdm(iterable, **tqdm_kwargs)


def say(*args) -> None:
    """One progress line on stdout, as ``print(*args)`` writes it, flushed at once (so it shows before a long
    compile or a bar); nothing when quiet."""
    if not is_quiet():
        print(*args, flush=True)
