"""What the clients' page loop (`_every_page`) needs of a paged listing's
request and pages (ListTokens, ListDeadLetters)."""

from __future__ import annotations

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
