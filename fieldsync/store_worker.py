"""The store's one owned thread: asyncio code never touches SQLite on the event loop.

Every call runs on a single dedicated thread, in submission order, so SQLite sees one
writer and the event loop stays responsive while a batch is fsynced (perf S11).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from fieldsync.store import Store

T = TypeVar("T")


class StoreWorker:
    def __init__(self, path: Path, *, cache_kib: int | None = None) -> None:
        """``cache_kib``: the store's page cache cap (``Store``)."""
        self.path = path
        self._cache_kib = cache_kib
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fieldsync-store")
        self._store: Store | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(
            self._executor, functools.partial(Store, self.path, cache_kib=self._cache_kib)
        )

    async def call(self, func: Callable[[Store], T]) -> T:
        """Run ``func(store)`` on the store thread and return its result."""
        store = self._store
        if store is None:
            raise RuntimeError("StoreWorker.open() was not awaited")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, store)

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, store.close)
        # Joining the (now idle) thread blocks: do it off the event loop.
        await asyncio.to_thread(self._executor.shutdown, True)
