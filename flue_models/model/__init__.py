"""The model layer: declarative Pydantic models on Redis hashes with exact indexes.

Example:
    ```python
    from flue_models import Model, Indexed

    class Ticket(Model):
        class Meta:
            collection = "ticket"
            order_by = "created_at"
        id: str = fm.new_id()
        status: Annotated[str, Indexed()]
        created_at: datetime = fm.now()
    ```
"""

from flue_models.model.base import Bound, Model
from flue_models.model.expressions import AllOf, AnyOf, Condition, FieldRef, any_of, in_, not_
from flue_models.model.fields import Indexed, Unique, make_id, new_id, now
from flue_models.model.query import Page, Query
from flue_models.model.verify import Drift, VerifyReport, repair_collection, verify_collection

__all__ = [
    "AllOf",
    "AnyOf",
    "Bound",
    "Condition",
    "Drift",
    "FieldRef",
    "Indexed",
    "Model",
    "Page",
    "Query",
    "Unique",
    "VerifyReport",
    "any_of",
    "in_",
    "make_id",
    "new_id",
    "not_",
    "now",
    "repair_collection",
    "verify_collection",
]
