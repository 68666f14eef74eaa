"""The progress reporter: ``quiet`` silences ``bar`` and ``say`` for a block and restores them on leaving it; the
environment decides where no block has; what threads, tasks and copied contexts see (the contextvars rules)."""

import asyncio
import contextvars
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tchaikovsky import progress


@pytest.fixture(scope="session")
def quiet_when_built():
    """A session-scoped fixture, like those that build the tests' data: was it set up quiet?"""
    return progress.is_quiet()


def _report(text: str) -> list[int]:
    """A line and a bar of three steps, as the package's code reports them; the items the bar yielded."""
    progress.say(text, 1)
    return list(progress.bar(range(3), desc=text))


def test_the_test_session_is_quiet_from_its_first_fixture(quiet_when_built, capsys):
    assert quiet_when_built and progress.is_quiet()
    assert _report("quiet") == [0, 1, 2]  # a quiet bar still iterates
    assert capsys.readouterr() == ("", "")


def test_quiet_silences_bar_and_say_and_leaving_the_block_restores_them(capsys):
    with progress.quiet(False):
        _report("loud")
        out, err = capsys.readouterr()
        assert out == "loud 1\n" and "loud: 100%" in err and "3/3" in err
        with progress.quiet():
            assert _report("inner") == [0, 1, 2]
            manual = progress.bar(total=5, desc="manual")
            manual.update(5)
            manual.close()
            assert manual.disable and capsys.readouterr() == ("", "")
        _report("again")  # the block is left: loud again
        out, err = capsys.readouterr()
        assert out == "again 1\n" and "again: 100%" in err
    assert progress.is_quiet()  # and the session's quiet is back


def test_quiet_is_restored_after_an_exception():
    with pytest.raises(RuntimeError), progress.quiet(False):
        raise RuntimeError("boom")
    assert progress.is_quiet()


@pytest.mark.parametrize("value, quiet", [("1", True), ("yes", True), ("0", False), ("", False), ("false", False),
                                          (None, False)])
def test_the_environment_decides_where_no_block_has(monkeypatch, value, quiet):
    if value is None:
        monkeypatch.delenv(progress.ENV, raising=False)
    else:
        monkeypatch.setenv(progress.ENV, value)
    assert contextvars.Context().run(progress.is_quiet) is quiet  # a fresh context: no block has decided
    with progress.quiet(False):  # a block wins over the environment, both ways
        assert not progress.is_quiet()
        with progress.quiet():
            assert progress.is_quiet()


def test_threads_start_with_a_fresh_context_tasks_and_copied_contexts_inherit(monkeypatch):
    """A ``threading.Thread`` (or a thread pool's worker) does not see the ``quiet`` block it was started in (Python
    < 3.14, or 3.14 without ``sys.flags.thread_inherit_context``): only the environment; pass the block on with
    ``contextvars.copy_context().run``. An asyncio task sees the block it was created in."""
    monkeypatch.delenv(progress.ENV, raising=False)
    inherits = bool(getattr(sys.flags, "thread_inherit_context", 0))
    seen = {}
    with progress.quiet():
        plain = threading.Thread(target=lambda: seen.setdefault("thread", progress.is_quiet()))
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=lambda: seen.setdefault("copied", ctx.run(progress.is_quiet)))
        for t in (plain, copied):
            t.start()
            t.join()
        with ThreadPoolExecutor(1) as pool:
            seen["pool"] = pool.submit(progress.is_quiet).result()

        async def task():
            return progress.is_quiet()

        seen["task"] = asyncio.run(task())
    assert seen == {"thread": inherits, "copied": True, "pool": inherits, "task": True}
