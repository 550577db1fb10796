"""What the clients' page loops need of a paged listing's request and pages
(`_every_page`: ListTokens, ListDeadLetters), and the loop that yields a
listing's first `limit` items (`first_items`: Query, ListActionCatalog)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Protocol, TypeVar


class PagedRequest(Protocol):
    """The request of a paged listing."""

    page_token: str


class Page(Protocol):
    """A page of such a listing."""

    next_page_token: str


PagedReq = TypeVar("PagedReq", bound=PagedRequest)
PageResp = TypeVar("PageResp", bound=Page)
Item = TypeVar("Item")


def first_items(
    read: Callable[[int, str], PageResp],
    items: Callable[[PageResp], Sequence[Item]],
    *,
    page_size: int,
    limit: int | None,
) -> Iterator[Item]:
    """The items of a listing, page after page (`read(page size, page
    token)`), its first `limit` (None: all of them); a page asks for no more
    than `limit`."""
    if limit is not None:
        page_size = min(page_size, limit)
    remaining, token = limit, ""
    while remaining is None or remaining > 0:
        page = read(page_size, token)
        found = items(page)[:remaining]
        yield from found
        if remaining is not None:
            remaining -= len(found)
        token = page.next_page_token
        if not token:
            return


async def first_items_async(
    read: Callable[[int, str], Awaitable[PageResp]],
    items: Callable[[PageResp], Sequence[Item]],
    *,
    page_size: int,
    limit: int | None,
) -> AsyncIterator[Item]:
    """`first_items` of an asynchronous `read`."""
    if limit is not None:
        page_size = min(page_size, limit)
    remaining, token = limit, ""
    while remaining is None or remaining > 0:
        page = await read(page_size, token)
        found = items(page)[:remaining]
        for item in found:
            yield item
        if remaining is not None:
            remaining -= len(found)
        token = page.next_page_token
        if not token:
            return
