"""Paging through a session's history, and listing sessions."""

from __future__ import annotations

from typing import Self

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    ConfigurationError,
)
from flue_models.model.query import OnError, Page, page_size
from flue_models.state.session.row import (
    HistoryPage,
)
from flue_models.state.session.writing import Appending
from flue_models.state.session_window import (
    read_window,
)


class Listing(Appending):
    """Paging back through a session's history, and listing sessions: one part of
    :class:`~flue_models.state.session.Session`.

    Example:
        ```python
        page = await Session.history("s-1", limit=50)
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def history(
        cls,
        session_id: str,
        *,
        before: str | None = None,
        limit: int | None = None,
        db: Database | None = None,
    ) -> HistoryPage | None:
        """Page backwards through a session's entries, newest page first (``None`` for a
        missing session).

        Args:
            before: the ``next_cursor`` of the previous page; ``None`` starts at the end.
            limit: entries per page: default 100, at most 1000; zero or less means the
                default.

        Each page reads about ``limit`` entries (O(page), whatever the session's length
        and whatever ``before`` says: a position past the end reads the last page); its
        entries are oldest first. Appends between pages do not move the cursor.

        Raises:
            ConfigurationError: ``before`` is not a cursor of this method (one to 19
                digits).

        Example:
            ```python
            page = await Session.history(session_id, limit=50)
            older = await Session.history(session_id, before=page.next_cursor, limit=50)
            ```
        """
        database = pick_database(db)
        size = page_size(limit)
        end: int | None = None
        if before is not None:
            if (
                not (isinstance(before, str) and before.isdigit() and before.isascii())
                or len(before) > 19
            ):
                raise ConfigurationError(
                    f"{str(before)[:40]!r} is not a Session.history cursor (a position: "
                    "the next_cursor of a page)."
                )
            end = int(before)
        session = await cls.get(session_id, db=database)
        if session is None:
            return None
        (length,) = await database.run_batch([("LLEN", database.keys.session(session_id).entries)])
        last = session.base + int(length)
        end = last if end is None else min(end, last)  # never walk from past the end
        step = size
        while True:
            start = max(0, end - step)
            layers = session.layers()
            found, _ = await read_window(database, layers, start, end)
            if len(found) >= size or start == 0:
                break
            step *= 2  # chunked entries: more elements than entries
        page = found[-size:]
        first = page[0][0] if page else 0
        return HistoryPage([entry for _, entry in page], str(first) if first > 0 else None)

    @classmethod
    async def list(
        cls,
        *,
        agent: str | None = None,
        instance: str | None = None,
        harness: str | None = None,
        fork_of: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        on_error: OnError = "raise",
        db: Database | None = None,
    ) -> Page[Self]:
        """List sessions most recently updated first, filtered by the parts of their
        :func:`session_key` id or by the session they were forked from; rows only (no
        entries), O(page) with one filter.

        Args:
            limit: page size: default 100, at most 1000; zero or less means the default.
            cursor: the ``next_cursor`` of the previous page; the last page has none.
            on_error: a row that cannot be read raises (``"raise"``) or is left out,
                listed in ``Page.skipped`` and warned of (``"skip"``), as
                ``Query.on_error`` does.

        A session appended to while you page moves to the front: a later page does not
        show it again.

        Example:
            ```python
            page = await Session.list(agent="support", limit=20)
            for session in page.items:
                print(session.id, session.updated_at, session.entry_count)
            ```
        """
        filters = {"agent": agent, "instance": instance, "harness": harness, "fork_of": fork_of}
        conditions = [getattr(cls, name) == value for name, value in filters.items() if value]
        query = cls.find(*conditions).sort_by("-updated_at").on_error(on_error)
        size = page_size(limit)
        return await query.using(pick_database(db)).page(size, cursor)
