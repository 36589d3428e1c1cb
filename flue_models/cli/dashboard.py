"""``flue-models serve``: the web dashboard (the ``web`` extra)."""

from __future__ import annotations

import argparse

from flue_models.errors import FlueModelsError


async def serve(args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C.

    Example:
        ```console
        $ flue-models serve --port 8000
        ```
    """
    try:
        from flue_models.web import serve
    except ImportError as exc:  # the optional extra is missing
        raise FlueModelsError(
            f"the dashboard needs the web extra ({exc.name} is missing): "
            "pip install 'flue-models[web]'"
        ) from exc
    return await serve(args)
