"""The app under concurrent load: ``scripts/load_test.py`` against the session's ``python app.py``.

Small counts (4 clients x 5 requests after a short warm-up) so that it stays within about a minute; the
full run (8 x 25) is ``python scripts/load_test.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_load_test_passes_against_the_app(app_server):
    env = dict(os.environ)
    for name in ("ANOMALY_HUB_REPO", "ANOMALY_HUB_REVISION", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        env.pop(name, None)
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, str(ROOT / "scripts" / "load_test.py"), "--url", app_server.url]
    command += ["--pid", str(app_server.pid)]
    command += ["--clients", "4", "--requests", "5", "--warmup", "4", "--time-limit", "150", "--json"]

    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)

    report = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "PASS" in done.stdout and '"violations": 0' in done.stdout.splitlines()[-1], report
