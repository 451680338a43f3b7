"""Gradio's per-session set-up, made lazy: one documented patch, applied by ``build_demo``.

On the first request of every new session (a page load), Gradio 6 (``gradio.state_holder.SessionState``) builds the
configuration of *every* block of the app for deep links (``config_values``), calling ``inspect.signature`` for
each component, and it is never read unless someone asks for a deep link. With this app's 94 blocks, py-spy put
about half of a page load's server CPU there; measured (100 new sessions, one at a time, 2-core VM), the user CPU
of a page load fell from 13.3 to 7.5 ms with this patch (the blocks a session's events touch are still computed,
on first use). Here the same dictionary fills
on demand: an entry when Gradio touches it (it already computes missing entries itself), every entry when it is
iterated (``SessionState.components``, the deep-link route). What Gradio stores and answers is unchanged
(``tests/test_gradio_sessions.py`` compares both).

The patch wraps Gradio's own ``__init__`` (it runs with an empty block table, so the loop has nothing to do) and is
applied only when ``SessionState`` still has that shape; otherwise Gradio is left alone and a warning logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from types import MappingProxyType
from typing import Any

from gradio import state_holder

logger = logging.getLogger(__name__)

_original_init: Callable[..., None] | None = None


class LazyConfigs(dict):
    """A dict of block configs whose entries are computed on first use; iteration computes all of them."""

    def __init__(self, keys: Callable[[], Iterable[int]], compute: Callable[[int], dict]) -> None:
        super().__init__()
        self._keys, self._compute, self._complete = keys, compute, False
        self._lock = threading.Lock()  # a session's requests may run in several threads

    def _fill(self) -> None:
        if self._complete:
            return
        with self._lock:
            if self._complete:
                return
            for key in self._keys():
                if not super().__contains__(key):
                    super().__setitem__(key, self._compute(key))
            self._complete = True  # only once every entry is in (a failure above leaves it to the next call)

    def __missing__(self, key: int) -> dict:
        value = self._compute(key)
        super().__setitem__(key, value)
        return value

    def __iter__(self) -> Iterator[int]:
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def items(self):  # type: ignore[override]
        self._fill()
        return super().items()

    def keys(self):  # type: ignore[override]
        self._fill()
        return super().keys()

    def values(self):  # type: ignore[override]
        self._fill()
        return super().values()


class _NoBlocks:
    """The app's Blocks as Gradio's SessionState.__init__ sees it: every attribute, but an empty block table."""

    blocks = MappingProxyType({})

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _lazy_init(self: Any, blocks: Any) -> None:
    assert _original_init is not None
    _original_init(self, _NoBlocks(blocks))
    config = self.blocks_config
    self.config_values = LazyConfigs(
        keys=lambda: [k for k in config.blocks if k in blocks.blocks],
        compute=lambda k: config.config_for_block(k, [], config.blocks[k]))


def make_session_setup_lazy() -> bool:
    """Apply the patch once (idempotent); False when Gradio's SessionState no longer looks as expected."""
    global _original_init
    cls = state_holder.SessionState
    if _original_init is not None:
        return True
    code = getattr(cls.__init__, "__code__", None)
    if code is None or code.co_varnames[:2] != ("self", "blocks") or "config_values" not in code.co_names:
        logger.warning("gradio.state_holder.SessionState changed: per-session set-up left as it is")
        return False
    _original_init = cls.__init__
    cls.__init__ = _lazy_init
    logger.debug("Gradio sessions: block configs computed on demand")
    return True
