"""Declaring a model with another bucket count for a while: a store split into another
count (``flue-models cluster split``), or a redeploy with a new count."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from flue_models.model.base import Model


@contextmanager
def declaring(model: type[Model], buckets: int, partition_by: str = "id") -> Iterator[None]:
    """``model`` as if its Meta said ``buckets = N`` (and ``partition_by``) until the
    block ends."""
    spec = model.__flue_spec__
    model.__flue_spec__ = dataclasses.replace(spec, buckets=buckets, partition_by=partition_by)
    try:
        yield
    finally:
        model.__flue_spec__ = spec
