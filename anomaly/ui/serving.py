"""Serving helpers: our errors as one message, upload quirks, spreadsheet-safe CSV, the page's CSS and script.

Every error the engine raises maps to one title and one message here, whether the page shows it in place
(``caught``) or an API call raises it (``api_errors``): the page, gradio_client's ``AppError`` and the MCP
tool result carry the same text. Any other exception is a bug of ours: logged with its traceback, and told
to the visitor as "something went wrong on our side".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL.Image import DecompressionBombError

from anomaly.errors import AudioInputError, BundleError, CalibrationError, GearboxError, HubError
from anomaly.ui import limits, uploads
from anomaly.ui.scripts import HEAD  # noqa: F401 - app.py serves it from here

log = logging.getLogger("anomaly.ui")

INTERNAL_ERROR = "Internal error"


def redact(text: str, paths: Sequence[str | Path] = ()) -> str:
    """A message without the server's temporary folders: an upload is shown by its own file name."""
    for path in paths:
        text = text.replace(str(path), Path(path).name)
    return text


def describe(exc: BaseException, doing: str, paths: Sequence[str | Path] = ()) -> tuple[str, str]:
    """The title and the message a visitor sees for an exception: one per error type."""
    if isinstance(exc, CalibrationError):
        title = "Cannot adapt to these recordings"
    elif isinstance(exc, AudioInputError):
        title = "Cannot use this file"
    elif isinstance(exc, HubError):
        title = "The Hugging Face Hub failed"
    elif isinstance(exc, BundleError):
        title = "Cannot use this model or calibration"
    elif isinstance(exc, GearboxError):
        title = "Cannot do this"
    else:  # a bug of ours: its text says nothing to a visitor, and the input may well be fine
        return INTERNAL_ERROR, internal_message(doing)
    return title, redact(str(exc), paths)


def internal_message(doing: str) -> str:
    """What a visitor reads when our code failed: whose fault it is, and that we were told."""
    return (
        f"Something went wrong on our side while {doing}. It is not a problem with what you sent; the error "
        "was logged for us to fix. Please try again later."
    )


@dataclass
class Caught:
    """What ``caught`` saw: nothing, or the title and message of the error to show in place; ``internal``
    when it was a bug of ours rather than a bad input."""

    title: str | None = None
    message: str | None = None
    internal: bool = False

    def __bool__(self) -> bool:
        return self.message is not None


@contextmanager
def caught(doing: str, paths: Sequence[str | Path] = ()) -> Iterator[Caught]:
    """Catch any error of the block for showing on the page.

    Our own errors (``GearboxError``: a bad recording, image or calibration file) are the visitor's to fix:
    their message names the file and the problem, and the log gets one line. Any other exception is a bug
    of ours: the log gets its traceback, the visitor "something went wrong on our side", never a hint that
    the file was at fault.
    """
    outcome = Caught()
    try:
        yield outcome
    except gr.Error:
        raise
    except GearboxError as exc:
        outcome.title, outcome.message = describe(exc, doing, paths)
        log.info("refused: %s", outcome.message)
    except Exception as exc:
        log.exception("unexpected error while %s", doing)  # the one traceback, here
        outcome.title, outcome.message = describe(exc, doing, paths)
        outcome.internal = True


def refuse(message: str, title: str = "Cannot use this input") -> gr.Error:
    """The error an API call raises: one line in the server's log, the message to the caller.

    gradio would print a traceback for every ``gr.Error`` (``print_exception``); a refused upload is not a
    fault of the server, so the log gets the message alone.
    """
    log.info("refused: %s", message)
    return gr.Error(message, title=title, print_exception=False)


@contextmanager
def api_errors(doing: str, paths: Sequence[str | Path] = ()) -> Iterator[None]:
    """Raise any error of the block as ``gr.Error``, with the title and message (and the log line) that
    ``caught`` gives the page."""
    with caught(doing, paths) as failure:
        yield
    if failure:
        raise gr.Error(failure.message, title=failure.title, print_exception=False)


def refuse_unusable_inputs(demo: gr.Blocks, *, unused_upload_s: float = limits.UNUSED_UPLOAD_MAX_AGE_S) -> gr.Blocks:
    """Say why gradio itself refused an API call's input, instead of ``{"error": null}`` and a traceback.

    Before a handler runs, gradio moves every file named in a call into its cache; a path on the server that
    was not uploaded (``/etc/passwd``) or a URL to a private address (``http://169.254.169.254/``) raises
    there, outside any handler, and gradio hides the message and logs a traceback. Here the refusal
    becomes a ``gr.Error`` with gradio's reason and what to do instead, and one line in the log. (An
    instance attribute, like ``tolerate_unreadable_images``.)

    An upload that has been deleted (``uploads.UploadGuard`` deletes those no call used within
    ``unused_upload_s``, gradio the rest after its cache age) would reach the handler as a missing file, or
    fail inside gradio; the visitor is told instead that it is gone and to upload it again.
    """
    import httpx
    from gradio.exceptions import Error
    from gradio.utils import get_upload_folder

    preprocess_data = demo.preprocess_data

    async def refusing(block_fn, inputs, *args, **kwargs):
        gone = uploads.deleted_uploads(inputs, get_upload_folder())
        if gone:
            message = uploads.gone_message(gone, unused_upload_s, limits.cache_sweep()[1])
            raise refuse(message, title="Upload it again")
        try:
            return await preprocess_data(block_fn, inputs, *args, **kwargs)
        except Error:
            raise
        except (ValueError, OSError, httpx.HTTPError) as exc:  # InvalidPathError is a ValueError
            reason = str(exc).strip() or type(exc).__name__
            raise refuse(
                f"The input cannot be used: {reason.rstrip('.')}. Send a file with the call itself (gradio_client: "
                "handle_file(path)); files on the server and private addresses are not read.",
                title="Cannot use this input",
            ) from None

    demo.preprocess_data = refusing
    return demo


def tolerate_unreadable_images(component: gr.Image) -> gr.Image:
    """Let a file PIL cannot open through to the handler instead of failing inside gradio.

    ``gr.Image`` opens every upload before the handler runs and would answer a broken or non-image file,
    or a decompression bomb, with a bare "error"; the engine's ``image_to_log_mel`` says which file and
    what is wrong with it. (An instance attribute rather than a subclass: gradio writes a ``.pyi`` stub
    next to any module that defines a component class.)
    """
    preprocess = component.preprocess

    def tolerant(payload):
        try:
            return preprocess(payload)
        except (OSError, DecompressionBombError):  # unreadable, truncated, or beyond PIL's pixel limit
            if payload is None or not getattr(payload, "path", None):
                raise
            return str(payload.path)

    component.preprocess = tolerant
    return component


def every_file_to_the_handler(component: gr.File) -> gr.File:
    """Hand every uploaded file of a multi-file box to the handler, whatever its type.

    ``gr.File`` checks ``file_types`` again on the server and refuses the whole call ("Invalid file type")
    for one PNG among a hundred recordings; the docs promise that a bad file becomes its own row, with the
    engine's sentence naming it. The browser's picker still offers ``file_types`` only. (gradio also leaves
    an empty temporary file per upload on that path; this one makes none.)
    """
    from gradio.data_classes import ListFiles
    from gradio.utils import NamedString

    def every_file(payload):
        if payload is None:
            return None
        files = list(payload) if isinstance(payload, ListFiles) else [payload]
        return [NamedString(f.path) for f in files]

    component.preprocess = every_file
    return component


def serve_examples_in_place(folder: Path) -> None:
    """Serve the bundled example clips from ``folder`` itself rather than from copies in gradio's cache.

    The cache sweep (``delete_cache``) deletes the copies gradio makes of example files (it keeps only
    files whose component lists them in ``keep_in_cache``, and an Audio example is a bare path, never listed),
    while ``gr.Examples`` remembers each copy's path for good: once swept, every click on that example
    failed with "no such file" until a restart. Static files are never copied, so the sweep never owns them.
    """
    from gradio.utils import is_static_file

    folder = Path(folder).resolve()
    if not is_static_file(folder):  # build() may run more than once in a process (tests)
        gr.set_static_paths([folder])


def example_in_api_docs(component: gr.components.Component, example: Path, *, repo_root: Path) -> None:
    """Show a bundled example in the API page's code snippets instead of gradio's generic sample file.

    On a Space (``SPACE_HOST`` is set) the snippet fetches the example from the Space itself; elsewhere it
    names the file by its path in the repository, which works from a clone.
    """

    host = os.environ.get("SPACE_HOST")
    where = f"https://{host}/gradio_api/file={example}" if host else str(example.relative_to(repo_root))
    # With "url" the snippet reads handle_file("<where>"), which gradio_client accepts for a path or a URL.
    payload = {"path": where, "url": where, "meta": {"_type": "gradio.FileData"}, "orig_name": example.name}
    component.example_payload = lambda: dict(payload)  # an attribute, as in tolerate_unreadable_images


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """A CSV cell a spreadsheet shows as text: a single quote before a leading = + - @, tab or carriage
    return, as OWASP recommends (a file named ``=HYPERLINK(...)+1.wav`` would otherwise run). Numbers
    such as -1.5 are left as they are."""
    if not isinstance(cell, str) or not cell.startswith(FORMULA_STARTS):
        return cell
    try:
        float(cell)
    except ValueError:
        return "'" + cell
    return cell


CSS = """
.gradio-container { max-width: 1180px !important; margin: auto; }
#header h1 { margin-bottom: 0.1em; }
#header p { margin: 0.15em 0; }
#synthetic-note { color: var(--body-text-color-subdued); font-size: 0.95em; }
#model-line { color: var(--body-text-color-subdued); font-size: 0.85em; }
.batch-rows { width: 100%; table-layout: fixed; border-collapse: collapse; font-size: 0.92em; }
.batch-rows th, .batch-rows td { padding: 0.35em 0.5em; border-bottom: 1px solid var(--border-color-primary);
  text-align: left; vertical-align: top; overflow-wrap: break-word; }
.batch-rows th:nth-child(1) { width: 42%; } .batch-rows th:nth-child(2) { width: 16%; }
.batch-rows .batch-file { overflow-wrap: anywhere; }
.batch-label { color: white; border-radius: 4px; padding: 0.1em 0.4em; font-weight: 600; display: inline-block; }
.batch-error { color: var(--body-text-color-subdued); }
.caption p { margin: 0.2em 0 0 0; font-size: 0.95em; }
.hint { color: var(--body-text-color-subdued); font-size: 0.85em; }
#label-output .output-class, #adapt-label .output-class, #live-label .output-class { color: white; font-size: 1.6em; }
#reference-banner { background: #e6f4f1; border-left: 4px solid #14b8a6; padding: 0.4em 0.8em; border-radius: 4px; }
#reference-banner:empty, #reference-banner:has(.prose:empty) { display: none; }
#live-mic-box:has(#live-mic-problem[hidden]) { display: none; }
#live-mic-problem { background: #d64541; color: white; padding: 0.6em 0.9em; border-radius: 6px; font-weight: 600; }
#details-output table { font-size: 0.92em; }
.gauge-note { color: var(--body-text-color-subdued); font-size: 0.9em; margin-top: 0.4em; }
footer { margin-top: 1em; }
/* An upload box's label wraps before its download / share / clear buttons rather than running under them. */
#audio-input:has(.icon-button-wrapper) [data-testid=block-label],
#image-input:has(.icon-button-wrapper) [data-testid=block-label] { max-width: calc(100% - 96px); }
/* Tab names wrap to a second line on a phone instead of widening the page beyond the screen. */
.tab-container:not(.visually-hidden) { flex-wrap: wrap; }
@media (max-width: 640px) {
  #label-output .output-class, #adapt-label .output-class, #live-label .output-class { font-size: 1.25em; }
}
"""

THEME_ARGS = {"primary_hue": "teal", "secondary_hue": "slate", "neutral_hue": "slate"}


def examples_cache_is_complete(folder: Path, n_examples: int) -> bool:
    """Whether gradio's examples cache in ``folder`` holds one whole row for each of ``n_examples`` examples,
    in order, and every file its rows name is there."""
    import csv

    try:
        with open(folder / "log.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        indices = (folder / "indices.csv").read_text().split()
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if len(rows) != n_examples + 1 or indices != [str(i) for i in range(n_examples)]:
        return False
    if any(len(row) != len(rows[0]) for row in rows[1:]):
        return False
    for cell in (cell for row in rows[1:] for cell in row):
        if cell.startswith("{") and '"path"' in cell:
            try:
                path = json.loads(cell).get("path")
            except (json.JSONDecodeError, AttributeError):
                return False
            if path and not (folder / path).exists() and not Path(path).exists():
                return False
    return True


def key_examples_cache(examples: gr.Examples, detector, files: list[Path], code: list[Path]) -> Path:
    """Point the examples' cache at a folder keyed by the model, the clips and the drawing code.

    gradio reuses a cache folder by component id, so a new bundle or a new drawing would otherwise show stale
    results. The folder stays under gradio's own cache root (``GRADIO_EXAMPLES_CACHE``), from which it serves
    files; nothing in the environment is changed.
    """
    import hashlib

    from gradio.utils import get_cache_folder

    digest = hashlib.sha256()
    digest.update(json.dumps(detector.bundle.config.get("files", {}), sort_keys=True).encode())
    digest.update(json.dumps(detector.thresholds.to_dict(), sort_keys=True).encode())
    for path in (*code, *files):
        digest.update(Path(path).read_bytes())
    folder = get_cache_folder() / digest.hexdigest()[:16] / str(examples.dataset._id)
    if folder.exists() and not examples_cache_is_complete(folder, len(files)):
        # A run stopped while caching left part of it; gradio would serve that part for good ("Using
        # cache") and show Error for the rest. Start it again.
        log.warning("the examples cache in %s is incomplete or damaged: caching the examples again", folder)
        shutil.rmtree(folder, ignore_errors=True)
    examples.cached_folder = folder
    examples.cached_file = folder / "log.csv"
    examples.cached_indices_file = folder / "indices.csv"
    return folder
