"""The top floor: Prefect flows, the command line and the reports.

Prefect's ephemeral API server starts as a subprocess on first use; on a busy 2-core machine it
can take longer than Prefect's default 20 s, so the wait is raised here unless set already.
Prefect creates PREFECT_HOME without its parents; a PREFECT_HOME inside a folder that does not
exist yet (a fresh POSECOACH_HOME, say) is made here first.
"""

import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
if os.environ.get("PREFECT_HOME"):
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
