"""Serving limits for a 2-vCPU Space: what one request may cost, and how long uploads are kept.

The page's words (``views``), its handlers and ``app.py`` read them here, as does the runtime.
"""

from anomaly import decoding

MAX_SECONDS = decoding.MAX_SECONDS  # longest recording scored, the CLI's limit too
MAX_FILE_SIZE = "50mb"  # enforced by gradio on every upload
MAX_BATCH_FILES = 100
MAX_CALIBRATION_FILES = 200
# Uploads and generated files are deleted this long after they were made (checked every CACHE_SWEEP_S).
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 300, 900
# An upload that no call has named is deleted sooner (anomaly.ui.uploads): anyone can post files without
# ever calling an endpoint. The page uploads a file when it is chosen, so this is also how long a visitor
# may wait between choosing a file and pressing Analyze.
UNUSED_UPLOAD_MAX_AGE_S = 300
