"""The inventory application's model (imported by its script and its migrations)."""

from typing import Annotated

import flue_models as fm
from flue_models import Indexed, Model


class Item(Model):
    class Meta:
        collection = "inventory_item"

    id: str = fm.new_id()
    name: str
    priority: Annotated[int | None, Indexed(range=True)] = None  # added in release 2
