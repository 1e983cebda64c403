"""One wrapper per function kind: plain, coroutine, generator and async generator functions.

Each wrapper keeps the wrapped function's kind (``inspect.iscoroutinefunction`` and friends stay true),
its signature and its metadata. The user's code runs exactly once and outside any guard, and the user's
exceptions pass through unchanged. Before ``register()`` the function is called after one flag check.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, AsyncGenerator, Callable, Generator, Optional, TypeVar

from typing_extensions import ParamSpec

from . import _attributes as A
from ._invocation import (
    Definition,
    Frame,
    enter,
    leave,
    normalize_flow_type,
    normalize_framework,
    pop,
    push,
    valid_name,
    warn_invalid_name,
)
from ._state import STATE, Runtime, warn_unregistered

_P = ParamSpec("_P")
_R = TypeVar("_R")


class DecoratedFlow:
    """The flow of one decorated function: its definition carries the code attributes."""

    __slots__ = ("_definition", "_runtime", "_skip", "code_attrs", "flow_type", "framework", "name")

    def __init__(self, name: object, flow_type: object, framework: object, fn: Any) -> None:
        self.name = name
        self.flow_type = flow_type
        self.framework = framework
        self.code_attrs = code_attributes(fn)
        self._runtime: Optional[Runtime] = None
        self._definition: Optional[Definition] = None
        self._skip = A.REASON_INVALID_NAME

    def resolve(self, rt: Runtime) -> Optional[Definition]:
        if self._runtime is not rt:
            self._resolve(rt)
        definition = self._definition
        if definition is None:
            rt.count_skip(self._skip)
        return definition

    def _resolve(self, rt: Runtime) -> None:
        definition = None
        name = self.name
        if not valid_name(name):
            warn_invalid_name(name)
            self._skip = A.REASON_INVALID_NAME
        else:
            assert isinstance(name, str)
            name = str.__str__(name)  # a str subclass may be unhashable or format itself oddly
            flow_type = normalize_flow_type(self.flow_type)
            framework = normalize_framework(self.framework)
            if rt.admit((flow_type, framework, name)):
                definition = Definition(name, flow_type, framework, self.code_attrs)
            else:
                self._skip = A.REASON_NAME_CAP
        self._definition = definition
        self._runtime = rt


def code_attributes(fn: Any) -> dict[str, str]:
    """``code.function.name`` (module-qualified) and ``code.file.path`` of what is decorated."""
    if isinstance(fn, (classmethod, staticmethod)):
        fn = fn.__func__
    elif isinstance(fn, functools.partial):
        fn = fn.func
    attrs: dict[str, str] = {}
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(qualname, str):
        module = getattr(fn, "__module__", None)
        attrs[A.CODE_FUNCTION_NAME] = f"{module}.{qualname}" if isinstance(module, str) else qualname
    code = getattr(fn, "__code__", None)
    filename = getattr(code, "co_filename", None)
    if isinstance(filename, str):
        attrs[A.CODE_FILE_PATH] = filename
    return attrs


def wrap(fn: Callable[_P, _R], flow: DecoratedFlow) -> Callable[_P, _R]:
    """Wrap ``fn`` by its kind; classmethod and staticmethod objects are unwrapped and rewrapped."""
    if isinstance(fn, (classmethod, staticmethod)):
        return type(fn)(wrap(fn.__func__, flow))
    if inspect.isasyncgenfunction(fn):
        return _wrap_async_generator(fn, flow)  # type: ignore[return-value]
    if inspect.iscoroutinefunction(fn):
        return _wrap_coroutine(fn, flow)
    if inspect.isgeneratorfunction(fn):
        return _wrap_generator(fn, flow)  # type: ignore[return-value]
    return _wrap_plain(fn, flow)


def _wrap_plain(fn: Callable[_P, _R], flow: DecoratedFlow) -> Callable[_P, _R]:
    state = STATE

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        rt = state.runtime
        if rt is None:
            if not state.warned_unregistered:
                warn_unregistered()
            return fn(*args, **kwargs)
        frame = enter(rt, flow, flow)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            leave(frame, exc)
            raise
        leave(frame, None)
        return result

    return wrapper


def _wrap_coroutine(fn: Callable[_P, Any], flow: DecoratedFlow) -> Callable[_P, Any]:
    state = STATE

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
        rt = state.runtime
        if rt is None:
            if not state.warned_unregistered:
                warn_unregistered()
            return await fn(*args, **kwargs)
        frame = enter(rt, flow, flow)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            leave(frame, exc)
            raise
        leave(frame, None)
        return result

    return wrapper


def _wrap_generator(
    fn: Callable[_P, Generator[Any, Any, Any]], flow: DecoratedFlow
) -> Callable[_P, Generator[Any, Any, Any]]:
    state = STATE

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Generator[Any, Any, Any]:
        rt = state.runtime
        if rt is None:
            if not state.warned_unregistered:
                warn_unregistered()
            return (yield from fn(*args, **kwargs))
        gen = fn(*args, **kwargs)
        # The flow starts at the first step and lasts the whole iteration, but its context is
        # active only while the generator runs a step: the consumer's spans never land inside it.
        frame = enter(rt, flow, flow, activate=False)
        if frame is None:
            return (yield from gen)
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            push(frame)
            try:
                value = gen.send(to_send) if to_throw is None else gen.throw(to_throw)
            except StopIteration as stop:
                leave(frame, None)
                return stop.value
            except BaseException as exc:
                leave(frame, exc)
                raise
            pop(frame)
            to_throw = None
            try:
                to_send = yield value
            except GeneratorExit:
                _close_generator(gen, frame)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _close_generator(gen: Generator[Any, Any, Any], frame: Frame) -> None:
    """The consumer stopped early (``break``, ``close()``, garbage collection): a success."""
    push(frame)
    try:
        gen.close()
    except BaseException as exc:
        leave(frame, exc)
        raise
    leave(frame, None)


def _wrap_async_generator(
    fn: Callable[_P, AsyncGenerator[Any, Any]], flow: DecoratedFlow
) -> Callable[_P, AsyncGenerator[Any, Any]]:
    state = STATE

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> AsyncGenerator[Any, Any]:
        rt = state.runtime
        agen = fn(*args, **kwargs)
        frame: Optional[Frame] = None
        if rt is None:
            if not state.warned_unregistered:
                warn_unregistered()
        else:
            frame = enter(rt, flow, flow, activate=False)
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            if frame is not None:
                push(frame)
            try:
                if to_throw is None:
                    value = await agen.asend(to_send)
                else:
                    value = await agen.athrow(to_throw)
            except StopAsyncIteration:
                leave(frame, None)
                return
            except BaseException as exc:
                leave(frame, exc)
                raise
            if frame is not None:
                pop(frame)
            to_throw = None
            try:
                to_send = yield value
            except GeneratorExit:
                if frame is not None:
                    push(frame)
                try:
                    await agen.aclose()
                except BaseException as exc:
                    leave(frame, exc)
                    raise
                leave(frame, None)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper
