"""The `posecoach` command line: one verb per job (see DESIGN.md, "The command line").

Each flows/cmd_*.py module attaches its verbs to the apps in flows.app; importing it here is
what puts them on the command line.
"""

from __future__ import annotations

import flows.cmd_demo  # noqa: F401
import flows.cmd_ingest  # noqa: F401
import flows.cmd_models  # noqa: F401
import flows.cmd_paper  # noqa: F401
import flows.cmd_retrain  # noqa: F401
import flows.cmd_score  # noqa: F401
import flows.cmd_serve  # noqa: F401
import flows.cmd_synth  # noqa: F401
from flows.app import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
