"""Progress bars for long work: one bar per stage (building, relaxing), shared by every job of that stage.

A command that runs a whole campaign in one process (``dp-screen run``) opens :func:`progress_bars`; each build or
relax chunk job then adds its structures to its stage's bar and advances it as they finish, so a person sees
structures done / total, the rate and the time left across all chunks. Jobs running anywhere else (FireWorks
workers, a notebook without bars) see no bars and report nothing.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class StageBar:
    """A tqdm bar on stderr that appears once a total is known (after the database answered, so an error never
    shares a line with it); each :meth:`start` adds to the total (several chunk jobs, one bar)."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit, self.bar = desc, unit, None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit=self.unit, desc=self.desc, file=sys.stderr, mininterval=0.5)
        else:
            self.bar.total += total
            self.bar.refresh()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> StageBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_active: dict[str, StageBar] | None = None
STAGES = {"building": "structure", "relaxing": "structure"}


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """Show one bar per stage (:data:`STAGES`) for the jobs run inside the block (``enabled`` False: none)."""
    global _active
    previous, _active = _active, ({} if enabled else None)
    try:
        yield
    finally:
        for bar in (_active or {}).values():
            bar.close()
        _active = previous


def stage(name: str) -> tuple[Callable[[int], None] | None, Callable[[int], None] | None]:
    """(on_total, progress) callbacks of a stage's bar inside :func:`progress_bars`, else (None, None)."""
    if _active is None:
        return None, None
    if name not in _active:
        _active[name] = StageBar(name, STAGES.get(name, "item"))
    bar = _active[name]
    return bar.start, bar.update
