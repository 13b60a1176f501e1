"""asyncio forms of the blocking operations.

    from contain import aio
    c = await aio.run("busybox:test", ["sleep", "1"], root=...)
    code = await aio.wait(c)                   # the monitor's pidfd on the loop
    result = await aio.exec_run(c, ["echo", "hi"])
    async for line in aio.logs(c, follow=True): ...

Waiting costs no thread: wait() opens a pidfd on the container's monitor
(the container's parent, which ends right after it) and hands it to
loop.add_reader; exec_run reads its pipes the same way.  run, create,
start, remove, pull and build do bounded work in the default executor.
Cancelling an await leaves nothing behind: a cancelled run removes the
container it was making, a cancelled exec_run kills its process, a
cancelled wait only stops watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal as _signal
import time
from typing import Any, AsyncIterator, Callable, Optional

from .container import Container, ExecResult
from .errors import Conflict, ContainerNotFound, ContainError

__all__ = ["run", "create", "start", "wait", "stop", "kill", "restart", "remove", "exec_run", "logs",
           "pull", "build", "to_thread"]


async def to_thread(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """func(*args, **kwargs) in the loop's default executor."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))


async def _make(factory: Callable[[], Container]) -> Container:
    """Run factory in the executor.  If the await is cancelled, the
    container it was making is removed before the cancel goes on (once it
    exists: a start takes milliseconds)."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, factory)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        def cleanup(f: "asyncio.Future") -> None:
            if not f.cancelled() and f.exception() is None:
                loop.run_in_executor(None, functools.partial(_remove_quietly, f.result()))

        try:
            made = await asyncio.shield(fut)
        except asyncio.CancelledError:  # cancelled again: clean up when it is done
            fut.add_done_callback(cleanup)
            raise
        except Exception:  # it failed on its own: nothing was left
            raise asyncio.CancelledError() from None
        await loop.run_in_executor(None, functools.partial(_remove_quietly, made))
        raise


def _remove_quietly(c: Container) -> None:
    with contextlib.suppress(ContainError):
        c.remove(force=True)


async def run(image: Any, command: Any = None, **options: Any) -> Container:
    """Container.run, awaitable (the start is done in the executor)."""
    return await _make(functools.partial(Container.run, image, command, **options))


async def create(image: Any, command: Any = None, **options: Any) -> Container:
    return await _make(functools.partial(Container.create, image, command, **options))


async def start(container: Container) -> None:
    await to_thread(container.start)


async def remove(container: Container, force: bool = False, v: bool = False) -> None:
    await to_thread(container.remove, force=force, v=v)


def _monitor_pidfd(container: Container) -> Optional[int]:
    """A fresh pidfd on the container's monitor, or None when it has none."""
    from .container import _open_pidfd

    try:
        extra = container._load()["_contain"]
    except ContainerNotFound:
        return None
    return _open_pidfd(extra.get("monitor_pid", 0), extra.get("monitor_start"))


async def _readable(fd: int) -> None:
    """Until fd is readable, on the loop (no thread)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def wait(container: Container, timeout: Optional[float] = None) -> int:
    """Until the container is not running; its exit code.  Raises
    TimeoutError after timeout seconds, Conflict if it was never started."""
    async def until_exit() -> int:
        while True:
            fd = _monitor_pidfd(container)
            if fd is None:
                # No monitor (left, or never started): the record knows.
                return await to_thread(container.wait, timeout=0)
            try:
                await _readable(fd)
            finally:
                os.close(fd)
            # The monitor recorded the exit before it ended.  Folding it into
            # the record may release network resources (blocking netlink
            # calls that refuse to run on a thread with a running loop).
            state = await to_thread(container.inspect)
            if not state["State"]["Running"]:
                return state["State"]["ExitCode"]
            # Restarted by its policy meanwhile: watch the new monitor.

    if timeout is None:
        return await until_exit()
    try:
        return await asyncio.wait_for(until_exit(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"container {container.short_id} still running after {timeout}s") from None


async def kill(container: Container, signal: Any = "SIGKILL") -> None:
    await to_thread(container.kill, signal)


async def stop(container: Container, timeout: float = 10) -> None:
    """The stop signal, then SIGKILL after timeout; returns once it exited."""
    state = await to_thread(container.inspect)
    if not state["State"]["Running"]:
        return
    container._mark_stopped_by_user()
    with contextlib.suppress(Conflict):
        await kill(container, state["Config"].get("StopSignal") or "SIGTERM")
    try:
        await wait(container, timeout=timeout)
        return
    except TimeoutError:
        pass
    with contextlib.suppress(Conflict):
        await kill(container, "SIGKILL")
    await wait(container)


async def restart(container: Container, timeout: float = 10) -> None:
    await stop(container, timeout)
    await start(container)


async def exec_run(container: Container, cmd: Any, *, stdout: bool = True, stderr: bool = True,
                   demux: bool = False, input: Optional[bytes] = None,
                   timeout: Optional[float] = None, **options: Any) -> ExecResult:
    """Container.exec_run, awaitable: the pipes and the process's pidfd are
    watched by the loop.  On timeout or cancellation the process is killed."""
    loop = asyncio.get_running_loop()
    proc = await to_thread(container.exec, cmd, stdin=input is not None, stdout=stdout,
                           stderr=stderr, **options)
    pidfd = os.pidfd_open(proc.pid)
    bufs = {1: bytearray(), 2: bytearray()}
    pending: list = []
    try:
        for num, f in ((1, proc.stdout), (2, proc.stderr)):
            if f is not None:
                pending.append(_drain(loop, f, bufs[num]))
        if proc.stdin is not None:
            pending.append(_feed(loop, proc.stdin, input or b""))
        pending.append(_readable(pidfd))

        async def everything() -> None:
            await asyncio.gather(*pending)

        if timeout is None:
            await everything()
        else:
            try:
                await asyncio.wait_for(everything(), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"exec {cmd!r} still running after {timeout}s") from None
        code = proc.wait()
    except BaseException:
        for c in pending:
            if asyncio.iscoroutine(c):
                c.close()
        with contextlib.suppress(Exception):
            proc.kill(_signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(5)
        raise
    finally:
        os.close(pidfd)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
    out, err = bytes(bufs[1]), bytes(bufs[2])
    if demux:
        return ExecResult(code, (out if stdout else None, err if stderr else None))
    return ExecResult(code, out + err)


async def _drain(loop: asyncio.AbstractEventLoop, f: Any, buf: bytearray) -> None:
    fd = f.fileno()
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            await _readable(fd)
            continue
        except OSError:  # EIO: a terminal's end
            return
        if not data:
            return
        buf += data


async def _feed(loop: asyncio.AbstractEventLoop, f: Any, data: bytes) -> None:
    fd = f.fileno()
    os.set_blocking(fd, False)
    view = memoryview(data)
    try:
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                fut = loop.create_future()
                loop.add_writer(fd, lambda: fut.done() or fut.set_result(None))
                try:
                    await fut
                finally:
                    loop.remove_writer(fd)
            except BrokenPipeError:
                return
    finally:
        with contextlib.suppress(OSError):
            f.close()


async def logs(container: Container, *, follow: bool = False, stdout: bool = True,
               stderr: bool = True, timestamps: bool = False, tail: Any = None,
               since: Any = None, poll: float = 0.05) -> AsyncIterator[bytes]:
    """The container's log lines as an async iterator; with follow=True it
    goes on until the container exits (new lines are looked for every
    `poll` seconds, and read only when the log file changed)."""
    log_path = os.path.join(container._root.container_dir(container.id), "container.log")
    last_ts: Optional[int] = None  # time of the last line delivered (ns)
    dup = 0  # how many delivered lines carry exactly last_ts

    def batch(since_arg: Any, first: bool) -> list:
        # Every line comes with its time so the next batch starts right
        # after the last line delivered.
        return list(container.logs(stdout=stdout, stderr=stderr, timestamps=True,
                                   tail=tail if first else None, since=since_arg, stream=True))

    def select_new(lines: list) -> list:
        nonlocal last_ts, dup
        skip, out = dup, []
        for raw in lines:
            stamp, _, data = raw.partition(b" ")
            ts = _ns(stamp.decode())
            if last_ts is not None and ts < last_ts:
                continue
            if last_ts is not None and ts == last_ts and skip > 0:
                skip -= 1
                continue
            out.append(raw if timestamps else data)
            if ts == last_ts:
                dup += 1
            else:
                last_ts, dup, skip = ts, 1, 0
        return out

    started_ns = time.time_ns()
    for data in select_new(await to_thread(batch, since, True)):
        yield data
    if not follow:
        return
    if last_ts is None and tail not in (None, "all"):
        last_ts, dup = started_ns, 0  # tail=0: only what comes from now on
    last_size = _size(log_path)
    while True:
        running = (await to_thread(container.inspect))["State"]["Running"]
        size = _size(log_path)
        if size != last_size or not running:
            last_size = size
            # float seconds lose ~0.3 us at today's epoch: start 1 us early, skip what was seen
            since_arg = since if last_ts is None else (last_ts - 1000) / 1e9
            for data in select_new(batch(since_arg, False)):
                yield data
        if not running:
            return
        await asyncio.sleep(poll)


def _ns(stamp: str) -> int:
    from . import _timefmt

    main, _, frac = stamp.rstrip("Z").partition(".")
    secs = int(_timefmt.parse(main + "Z"))
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])


def _size(path: str) -> int:
    try:
        st = os.stat(path)
        return st.st_size + st.st_ino
    except FileNotFoundError:
        return -1


async def pull(ref: str, *, progress: Any = None, **options: Any) -> Any:
    """Image.pull in the executor (progress: a callback or True for a bar)."""
    from .image import Image

    if not hasattr(Image, "pull"):
        raise NotImplementedError("this contain has no Image.pull")
    if progress is not None:
        options["progress"] = progress
    return await to_thread(Image.pull, ref, **options)


async def build(*args: Any, progress: Any = None, **options: Any) -> Any:
    """The builder in the executor (Image.build or contain.Builder)."""
    import contain

    target = getattr(contain.Image, "build", None)
    if target is None and hasattr(contain, "Builder"):
        target = contain.Builder.build if hasattr(contain.Builder, "build") else None
    if target is None:
        raise NotImplementedError("this contain has no image builder")
    if progress is not None:
        options["progress"] = progress
    return await to_thread(target, *args, **options)

