"""Gearbox Sound Check: the Gradio app (a Hugging Face Space). Layout and wiring only.

The handlers, the views and the serving helpers live in ``anomaly.ui``; the engine in ``anomaly``. Importing
this module loads nothing: ``build(runtime)`` lays the page out for a loaded model, and ``python app.py``
(``main``) loads it (env ``ANOMALY_BUNDLE``, else the Hub repo in ``ANOMALY_HUB_REPO`` pinned by
``ANOMALY_HUB_REVISION``, else the bundled model; see ``anomaly.config``), warms it up, tunes the process and
serves on ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``.

Public API (also served as MCP tools): ``/score``, ``/analyze``, ``/analyze_spectrogram`` and ``/batch``.
"""

from __future__ import annotations

import logging
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from anomaly import charts, gauge, plots, spectrogram_plot
from anomaly.config import Settings
from anomaly.decoding import AUDIO_EXTENSIONS
from anomaly.errors import BundleError
from anomaly.ui import lanes, limits, serving, streams, uploads, views
from anomaly.ui.handlers import BATCH_COLUMNS, Page
from anomaly.ui.live import LivePage
from anomaly.ui.record import RECORD_KEY
from anomaly.ui.runtime import Runtime
from anomaly.ui.session import STORAGE_KEY, browser_store, storage_secret

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
TITLE = "Gearbox Sound Check"
# What the upload boxes offer: any file the browser calls audio, plus the extensions it may not (WebM is
# often "video/webm"). gr.Audio takes audio/* and audio/webm already.
AUDIO_FILE_TYPES = ["audio", *AUDIO_EXTENSIONS]
EXAMPLES = views.example_files(EXAMPLES_DIR)


def image_output(label: str, elem_id: str, **kwargs) -> gr.Image:
    """A picture with its caption above it (``caption``), not over it: on a phone the badge hid its top."""
    options = {"show_label": False, "type": "numpy", "format": "png", "interactive": False}
    return gr.Image(label=label, elem_id=elem_id, **options, **kwargs)


def threshold_slider(label: str, level: str, top: float, detector) -> gr.Slider:
    value = round(getattr(detector.thresholds, level), 2)
    return gr.Slider(0.0, top, value=value, step=0.01, label=label, elem_id=f"{level}-slider")


def with_caption(image: gr.Image, caption: str | None = None) -> gr.Image:
    """Render ``image`` (made with ``render=False``) under ``caption`` (default: its label, which is also its
    name in the API)."""
    gr.Markdown(f"**{caption or image.label}**", elem_classes=["caption"])
    return image.render()


def build(runtime: Runtime) -> SimpleNamespace:
    """The page for ``runtime``'s model: ``demo`` (the Blocks), ``page`` and ``live`` (the handlers), ``c``
    (the components, by name), ``examples`` and ``runtime``. Nothing is served or warmed up here."""
    detector = runtime.detector
    params = detector.params
    c = SimpleNamespace()  # the page's components, by name, for the handlers
    page, live = Page(runtime, c), LivePage(runtime, c)
    with gr.Blocks(title=TITLE, delete_cache=limits.cache_sweep()) as demo:
        # Per visitor; gradio drops both when the tab closes. The last analysis holds the log-mel and the map
        # (a few MB for a long recording), so it also expires after an hour of inactivity.
        c.session = gr.State(None)
        c.last = gr.State(None, time_to_live=3600)
        c.stored = browser_store(STORAGE_KEY, storage_secret(detector))
        c.record = browser_store(RECORD_KEY, storage_secret(detector))  # the adapted machine's readings

        gr.Markdown(
            f"# {TITLE}\nListen to a gearbox and tell whether it sounds **normal**, **needs maintenance** or is a "
            "**severe anomaly**, and see where in time and frequency it departs from normal.",
            elem_id="header",
        )
        gr.Markdown(views.training_note(detector), elem_id="synthetic-note")
        gr.Markdown(views.header_model_text(detector), elem_id="model-line")

        with gr.Tabs(overflow_behavior="wrap") as c.tabs:  # on a phone, a second row rather than a menu
            with gr.Tab("Analyze", id="analyze"):
                c.banner = gr.Markdown("", elem_id="reference-banner")
                # Outputs first (rendered below), so that the examples next to the input can name them.
                c.label = gr.Label(label="Verdict", elem_id="label-output", render=False)
                c.compared = gr.Markdown(label="Compared with", elem_id="compared-with", render=False)
                c.adapt_first = gr.Button(
                    "Adapt to my machine", variant="primary", visible=False, render=False,
                    elem_id="adapt-first-button",
                )
                # The labels name the outputs of /analyze: what each holds (the captions are for people).
                c.gauge = gr.HTML(label="verdict_html", elem_id="gauge-output", render=False)
                c.spectrogram = image_output("spectrogram", "spectrogram-output", render=False)
                c.timeline = image_output("timeline", "timeline-output", render=False)
                c.details = gr.Markdown(
                    label="Details", elem_id="details-output", container=True, padding=True, render=False
                )
                examples = None
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=300):
                        with gr.Tabs():
                            with gr.Tab("Recording", id="recording"):
                                c.audio = gr.Audio(
                                    sources=["upload", "microphone"], type="filepath", elem_id="audio-input",
                                    label=f"Recording (0.5 to {limits.MAX_SECONDS:g} s; {views.AUDIO_FORMATS_SHORT})",
                                )
                                serving.example_in_api_docs(
                                    c.audio, EXAMPLES_DIR / "fault_tooth.wav", repo_root=APP_DIR
                                )
                                analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
                                if EXAMPLES:
                                    serving.serve_examples_in_place(EXAMPLES_DIR)  # never swept
                                    examples = gr.Examples(
                                        examples=[[str(p)] for p in EXAMPLES],
                                        example_labels=[views.example_label(p) for p in EXAMPLES],
                                        inputs=[c.audio], outputs=page.view, fn=page.example,
                                        cache_examples=True, preload=False, elem_id="examples",
                                        label="Synthetic examples of the demo gearbox: click one",
                                    )
                            with gr.Tab("Spectrogram image", id="image"):
                                c.image = serving.tolerate_unreadable_images(
                                    gr.Image(
                                        type="filepath", image_mode=None, sources=["upload"],
                                        label="Spectrogram PNG", elem_id="image-input",
                                    )
                                )
                                analyze_image_btn = gr.Button(
                                    "Analyze image", variant="primary", elem_id="analyze-image-button"
                                )
                                gr.Markdown(views.image_hint(params), elem_classes=["hint"])
                        with gr.Group(elem_id="verdict-card"):
                            c.label.render()
                            c.compared.render()
                            c.adapt_first.render()
                        c.gauge.render()
                    with gr.Column(scale=7, min_width=300):
                        with_caption(c.spectrogram, "Spectrogram (cyan: departs from normal)")
                        c.show_map = gr.Checkbox(
                            value=True, label="Show where it departs from normal", elem_id="show-map"
                        )
                        with_caption(c.timeline, "Score over time")
                        c.details.render()
                with gr.Column(visible=False, elem_id="machine-record") as c.record_box:  # shown when adapted
                    c.record_text = gr.Markdown(elem_id="record-text")
                    c.record_trend = gr.HTML(elem_id="record-trend")
                    c.record_csv = gr.File(label="The record as CSV", height=90, elem_id="record-csv")
                with gr.Accordion("For developers: the answer as JSON (the /score endpoint)", open=False):
                    score_btn = gr.Button("Score as JSON", size="sm", elem_id="score-button")
                    c.score = gr.JSON(label="/score", elem_id="score-output")
                # The public /analyze endpoints raise their errors; the page's buttons show them in place.
                api_analyze = gr.Button(visible=False)
                c.api_calibration = gr.File(visible=False, label="calibration")  # the page uses the session's
                api_analyze_image = gr.Button(visible=False)

            with gr.Tab("Listen live", id="live"):
                c.live_state = gr.State(None, time_to_live=3600)
                gr.Markdown(views.LIVE_INTRO, elem_id="live-mic-note", elem_classes=["hint"])
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=300):
                        c.live_in = gr.Audio(
                            sources=["microphone"], type="filepath", streaming=True, label="Microphone",
                            elem_id="live-input",  # no waveform: drawn 60 times a second, it cost half a core
                            waveform_options=gr.WaveformOptions(show_recording_waveform=False),
                        )
                        # Filled and shown by serving.HEAD's script when the browser refuses the microphone.
                        gr.HTML('<div id="live-mic-problem" hidden></div>', elem_id="live-mic-box")
                        c.live_label = gr.Label(label="Verdict, live", elem_id="live-label")
                        c.live_gauge = gr.HTML(label="Score now", elem_id="live-gauge")
                    with gr.Column(scale=7, min_width=300):
                        c.live_timeline = with_caption(
                            image_output(
                                "The last minute: score of each 2-second piece", "live-timeline", render=False
                            )
                        )
                        c.live_status = gr.Markdown(elem_id="live-status")
                        c.live_alarms = gr.Markdown(elem_id="live-alarms")
                        c.live_summary = gr.Markdown(elem_id="live-summary")
                        with gr.Row():
                            c.live_csv = gr.File(
                                label="Readings (CSV)", height=90, visible=False, elem_id="live-csv"
                            )
                            c.live_worst = gr.File(
                                label="The worst 10 s (WAV)", height=90, visible=False, elem_id="live-worst"
                            )

            with gr.Tab("Batch", id="batch"):
                gr.Markdown(views.BATCH_INTRO)
                c.batch_in = serving.every_file_to_the_handler(gr.File(
                    file_count="multiple",
                    file_types=AUDIO_FILE_TYPES,
                    label=f"Recordings ({views.AUDIO_FORMATS_SHORT})",
                    elem_id="batch-input",
                ))
                batch_btn = gr.Button("Score all", variant="primary", elem_id="batch-button")
                c.batch_status = gr.Markdown(elem_id="batch-status")
                c.batch_trend = gr.HTML(label="Scores in upload order", elem_id="batch-trend")
                c.batch_rows = gr.HTML(label="Results", elem_id="batch-rows")
                # The API's table; the page shows the same rows as HTML, which wraps to a phone's width.
                c.batch_table = gr.Dataframe(
                    visible=False, headers=BATCH_COLUMNS, datatype=["str", "number", "number", "str", "bool", "str"],
                    label="Results", interactive=False, wrap=True, elem_id="batch-table",
                )
                c.batch_csv = gr.File(label="Results as CSV", elem_id="batch-csv")
                api_batch = gr.Button(visible=False)

            with gr.Tab("Adapt to my machine", id="adapt"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=300):
                        gr.Markdown(views.ADAPT_INTRO)
                        c.calibration_name = gr.Textbox(
                            label="Name this machine (optional)", placeholder="Pump 3, east hall", max_length=80,
                            elem_id="calibration-name",
                        )
                        c.calibration_in = serving.every_file_to_the_handler(gr.File(
                            file_count="multiple",
                            file_types=AUDIO_FILE_TYPES,
                            label="Normal recordings of your machine",
                            elem_id="calibration-input",
                        ))
                        with gr.Row():
                            calibrate_btn = gr.Button("Adapt", variant="primary", elem_id="calibrate-button")
                            forget_btn = gr.Button("Forget it: back to the demo model", elem_id="forget-button")
                        c.calibration_status = gr.Markdown(elem_id="calibration-status")
                        with gr.Row():
                            c.calibration_file = gr.File(
                                label="Your calibration file", height=120, elem_id="calibration-file"
                            )
                            c.calibration_upload = gr.File(
                                file_count="single", file_types=[".npz"], height=120, elem_id="calibration-upload",
                                label="Load a calibration file saved earlier",
                            )
                    with gr.Column(scale=2, min_width=300):
                        gr.Markdown(
                            "### Thresholds by hand\nMove a slider: the last recording's verdict follows at once."
                        )
                        top = views.slider_top(detector)
                        c.maintenance = threshold_slider("NEEDS MAINTENANCE from score", "maintenance", top, detector)
                        c.severe = threshold_slider("SEVERE ANOMALY from score", "severe", top, detector)
                        reset_btn = gr.Button("Reset to the calibrated thresholds", elem_id="reset-button")
                        c.adapt_label = gr.Label(
                            label="Last recording, with these settings", elem_id="adapt-label"
                        )
                        c.adapt_text = gr.Markdown(views.adapt_summary(None, detector), elem_id="adapt-summary")

            with gr.Tab("About", id="about"):
                gr.Markdown(views.about(detector), elem_id="about")

        # The API page lists endpoints in this order: /score first.
        calibrated_by = [c.api_calibration, c.session]  # a calibration file sent by the caller, else the visitor's
        score_btn.click(page.score, inputs=[c.audio, *calibrated_by], outputs=[c.score], api_name="score")
        lane = {"api_name": "analyze", "concurrency_limit": lanes.ANALYZE_LIMIT}  # /score keeps a core
        api_analyze.click(page.analyze, inputs=[c.audio, c.show_map, *calibrated_by], outputs=page.api_view, **lane)
        image_api = {"outputs": page.api_view, "api_name": "analyze_spectrogram"}
        api_analyze_image.click(page.analyze_spectrogram, inputs=[c.image, c.show_map, *calibrated_by], **image_api)
        batch_lane = {"concurrency_limit": lanes.BATCH_LIMIT, "concurrency_id": lanes.BATCH_LANE}
        batch_api = {"outputs": [c.batch_table, c.batch_csv], "api_name": "batch", **batch_lane}
        api_batch.click(page.batch, inputs=[c.batch_in, *calibrated_by], **batch_api)
        gr.api(page.ping, api_name="ping", api_visibility="undocumented")

        private = {"api_visibility": "private"}
        cleared = [*page.view, c.last]
        on_record = [c.record, c.record_box, c.record_text, c.record_trend, c.record_csv]
        shown = [*cleared, c.adapt_label, c.adapt_text, *on_record]
        analyze_btn.click(page.start_analysis, inputs=[c.audio], outputs=cleared, queue=False, **private).then(
            page.show_analysis, inputs=[c.audio, c.show_map, c.session, c.record], outputs=shown, **private
        )
        analyze_image_btn.click(
            page.start_analysis, inputs=[c.image], outputs=cleared, queue=False, **private
        ).then(page.show_image_analysis, inputs=[c.image, c.show_map, c.session, c.record], outputs=shown, **private)
        if examples is not None:
            examples.cache_event.then(
                page.refresh_after_example, inputs=[c.audio, c.show_map, c.session], outputs=shown, **private
            )
        c.show_map.change(
            page.redraw_spectrogram, inputs=[c.show_map, c.last], outputs=[c.spectrogram], **private
        )
        c.adapt_first.click(page.go_to_adapt, outputs=[c.tabs], queue=False, **private)
        batch_btn.click(
            page.show_batch,
            inputs=[c.batch_in, c.session],
            outputs=[c.batch_table, c.batch_rows, c.batch_csv, c.batch_trend, c.batch_status],
            **batch_lane,
            **private,
        )

        changed = [c.session, c.banner, *shown]
        for slider in (c.maintenance, c.severe):
            slider.input(
                page.set_thresholds,
                inputs=[c.maintenance, c.severe, c.show_map, c.session, c.last, c.record],
                outputs=changed,
                trigger_mode="always_last",
                show_progress="hidden",
                **private,
            )
        reset_btn.click(
            page.reset_thresholds,
            inputs=[c.show_map, c.session, c.last, c.record],
            outputs=[*changed, c.maintenance, c.severe],
            **private,
        )
        calibrated = [*changed, c.maintenance, c.severe, c.calibration_status, c.calibration_file, c.stored]
        calibrate_btn.click(
            page.calibrate,
            inputs=[c.calibration_in, c.calibration_name, c.show_map, c.session, c.last, c.record],
            outputs=calibrated,
            **batch_lane,
            **private,
        )
        c.calibration_upload.upload(
            page.load_calibration_file,
            inputs=[c.calibration_upload, c.calibration_name, c.show_map, c.session, c.last, c.record],
            outputs=calibrated,
            **private,
        )
        forget_btn.click(
            page.forget_calibration, inputs=[c.show_map, c.session, c.last, c.record], outputs=calibrated, **private
        )
        demo.load(page.restore, inputs=[c.stored, c.show_map, c.record], outputs=calibrated, **private)

        live_outputs = [c.live_state, c.live_label, c.live_gauge, c.live_timeline, c.live_status, c.live_alarms]
        c.live_in.start_recording(
            live.start,
            inputs=[c.session],
            outputs=[*live_outputs, c.live_summary, c.live_csv, c.live_worst],
            queue=False,
            **private,
        )
        c.live_in.stream(
            live.listen,
            inputs=[c.live_in, c.live_state, c.session],
            outputs=live_outputs,
            show_progress="hidden",
            trigger_mode="multiple",
            concurrency_limit=lanes.LIVE_LISTENERS,
            concurrency_id=lanes.LIVE_LANE,
            **private,
        )
        c.live_in.stop_recording(
            live.stop,
            inputs=[c.live_state, c.session],
            outputs=[c.live_state, c.live_label, c.live_summary, c.live_csv, c.live_worst, c.live_status],
            **private,
        )

    serving.refuse_unusable_inputs(demo, unused_upload_s=uploads.unused_upload_s())
    demo.queue(default_concurrency_limit=2)
    lanes.share_the_queue(demo, Settings.from_environ().proxy_hops)
    return SimpleNamespace(demo=demo, page=page, live=live, c=c, examples=examples, runtime=runtime)


@cache
def _built() -> SimpleNamespace:
    return build(Runtime.load())


def __getattr__(name: str):
    # ``app.demo`` for tools that look for it (``gradio app.py``): built with the environment's model on
    # first use, so that importing this module stays cheap.
    if name == "demo":
        return _built().demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> int:
    """``python app.py``: load the model, warm it up and serve until stopped; 2 for a bad model."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        Settings.from_environ(), limits.cache_sweep()  # the operator's settings, checked before any work
        runtime = Runtime.load()
    except (BundleError, ValueError) as exc:  # the operator's to fix: one line, as the CLI
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = build(runtime)
    logging.getLogger("anomaly").info(
        "%s; warm-up took %.1f s", runtime.model_message, runtime.prepare_to_serve()
    )
    if app.examples is not None:  # cached results are only valid for this model, these clips and this code
        pictures = (plots, spectrogram_plot, charts, gauge)
        code = [Path(__file__), *Path(views.__file__).parent.glob("*.py"), *(Path(m.__file__) for m in pictures)]
        serving.key_examples_cache(app.examples, runtime.detector, EXAMPLES, code)
    app.demo.launch(
        max_file_size=limits.MAX_FILE_SIZE,
        mcp_server=True,
        theme=gr.themes.Soft(**serving.THEME_ARGS),
        css=serving.CSS,
        head=serving.HEAD,
        footer_links=["api", "gradio", "settings"],
        allowed_paths=[str(EXAMPLES_DIR)],
        app_kwargs=uploads.app_kwargs(streams.middleware(runtime.live_chunks)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
