"""Models shared by the integration tests (each on its own collection)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field

import flue_models as fm
from flue_models import Indexed, Model, Unique


class Ticket(Model):
    class Meta:
        collection = "it_ticket"
        order_by = "created_at"

    id: str = fm.new_id()
    status: Annotated[str, Indexed()]
    priority: Annotated[int, Indexed(range=True)]
    owner: Annotated[str | None, Indexed()] = None
    email: Annotated[str | None, Unique()] = None
    title: str = ""
    created_at: dt.datetime = fm.now()


class TenantFields(Model):
    """The fields of ``Item`` and a tenant, for the two models below."""

    class Meta:
        abstract = True

    id: str = fm.new_id()
    tenant: Annotated[str, Indexed()]
    color: Annotated[str, Indexed()]
    flag: Annotated[bool, Indexed()]
    size: Annotated[int, Indexed(range=True)]
    weight: Annotated[float | None, Indexed(range=True)] = None
    seq: int = 0


class TenantItem(TenantFields):
    """Spread over eight buckets by its tenant: a query that fixes the tenant reads one
    bucket."""

    class Meta:
        collection = "it_tenant_item"
        order_by = "seq"
        indexes = (("color", "flag"),)
        buckets = 8
        partition_by = "tenant"


class FlatTenantItem(TenantFields):
    """``TenantItem`` in one bucket: the walk a partitioned listing must equal."""

    class Meta:
        collection = "it_flat_tenant_item"
        order_by = "seq"
        indexes = (("color", "flag"),)


class Account(Model):
    """One account per tenant: a ``Unique()`` partition field, kept per bucket."""

    class Meta:
        collection = "it_account"
        buckets = 4
        partition_by = "tenant"

    id: str = fm.new_id()
    tenant: Annotated[str, Unique()]
    plan: str = "free"


class Mood(enum.Enum):
    CALM = "calm"
    LOUD = "loud"


class Address(BaseModel):
    city: str
    lines: list[str]


class Everything(Model):
    """One field of every supported type, for round trips through a real hash."""

    class Meta:
        collection = "it_everything"

    text: str = ""
    number: int = 0
    ratio: float = 0.0
    flag: bool = False
    money: Decimal = Decimal("0")
    moment: dt.datetime | None = None
    day: dt.date | None = None
    ident: uuid.UUID | None = None
    mood: Mood = Mood.CALM
    blob: bytes = b""
    kind: Literal["a", "b"] = "a"
    maybe: int | None = None
    tags: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    address: Address | None = None


class Item(Model):
    """Small value domains, so generated queries match something."""

    class Meta:
        collection = "it_item"
        order_by = "seq"
        indexes = (("color", "flag"),)

    color: Annotated[str, Indexed()]
    flag: Annotated[bool, Indexed()]
    size: Annotated[int, Indexed(range=True)]
    weight: Annotated[float | None, Indexed(range=True)] = None
    seq: int = 0


class SpreadItem(Model):
    """``Item`` spread over eight buckets: listings gather from every bucket."""

    class Meta:
        collection = "it_spread_item"
        order_by = "seq"
        indexes = (("color", "flag"),)
        buckets = 8

    color: Annotated[str, Indexed()]
    flag: Annotated[bool, Indexed()]
    size: Annotated[int, Indexed(range=True)]
    weight: Annotated[float | None, Indexed(range=True)] = None
    seq: int = 0
