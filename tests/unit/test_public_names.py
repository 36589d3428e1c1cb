"""The public surface: one export list, a small one, and one error tree in one module."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import flue_models as fm
from flue_models import errors

PACKAGE = Path(fm.__file__).parent
#: The bounds the package keeps (issue "one layout, one error tree"; one more error class
#: for replicated durability, issue 31: "written, not yet on its replicas" is no other).
MOST_NAMES, MOST_ERROR_CLASSES = 70, 41


def type_checking_names() -> set[str]:
    """The names ``flue_models/__init__.py`` imports for type checkers."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n)
    )
    return {
        alias.asname or alias.name
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom) and node.module != "typing"
        for alias in node.names
    }


def test_one_export_list_and_every_name_resolves() -> None:
    exported = set(fm._EXPORTS)
    assert fm.__all__ == list(fm._EXPORTS)
    assert type_checking_names() == exported  # what type checkers see is the same list
    for name in fm.__all__:
        assert getattr(fm, name) is not None, name
    assert len(fm.__all__) <= MOST_NAMES, len(fm.__all__)


def test_every_exception_class_lives_in_errors_py() -> None:
    own = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    assert len(own) <= MOST_ERROR_CLASSES, sorted(own)
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base).endswith(("Error", "Warning")) for base in node.bases
            ):
                elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    # The CLI's "not found" and the dashboard's HTTP refusal are not library errors: they
    # never leave their command or request.
    assert sorted(elsewhere) == ["client.py:ClosedUnderUsError"], elsewhere


def test_the_exported_errors_are_errors_py_classes_in_one_tree() -> None:
    exported = [getattr(fm, name) for name in fm.__all__]
    classes = [c for c in exported if inspect.isclass(c) and issubclass(c, BaseException)]
    for cls in classes:
        assert cls.__module__ == "flue_models.errors", cls
        assert issubclass(cls, fm.FlueModelsError | Warning), cls
    roots = {
        fm.ConfigurationError,
        fm.UnavailableError,
        fm.ConflictError,
        fm.NotFoundError,
        fm.CorruptDataError,
        fm.SchemaError,
        fm.ServerCheckError,
        errors.CommandError,
    }
    for name, value in vars(errors).items():
        if inspect.isclass(value) and issubclass(value, fm.FlueModelsError):
            if value is fm.FlueModelsError:
                continue
            assert any(issubclass(value, root) for root in roots), name  # grouped by cause


def test_every_refusal_is_a_conflict_and_every_outage_unavailable() -> None:
    for refusal in (
        fm.AlreadyExistsError,
        fm.UniqueViolationError,
        errors.GuardError,
        fm.StreamConflictError,
        fm.StreamClosedError,
        fm.AdmissionConflictError,
        fm.SessionBusyError,
        fm.SessionDeletingError,
        fm.SessionForkedError,
    ):
        assert issubclass(refusal, fm.ConflictError), refusal
    for outage in (
        fm.ConnectionFailedError,
        fm.AuthenticationFailedError,
        fm.ConnectionLostError,
        errors.PoolExhaustedError,
        errors.OutOfMemoryError,
    ):
        assert issubclass(outage, fm.UnavailableError), outage
    # Each subclass runs its parent's __init__: the attributes every conflict has exist.
    conflict = fm.AlreadyExistsError.claimed("Order", "o-1", "tenant", "acme")
    assert (conflict.model, conflict.record_id, conflict.partition) == ("Order", "o-1", "acme")
    assert fm.StreamClosedError("runs/1").record_id == ""


def test_submodules_do_not_reexport_errors() -> None:
    for name in ("flue_models.model", "flue_models.state", "flue_models.state.submission"):
        module = importlib.import_module(name)
        assert not [n for n in module.__all__ if n.endswith("Error")], name
