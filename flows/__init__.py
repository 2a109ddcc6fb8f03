"""The top floor: Prefect flows, the command line and the reports.

Prefect's ephemeral API server starts as a subprocess on first use; on a busy 2-core machine it
can take longer than Prefect's default 20 s, so the wait is raised here unless set already.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
