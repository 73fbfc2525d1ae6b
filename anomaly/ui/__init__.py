"""The web page's side of the project: handlers, views and serving helpers for ``app.py``.

``app.py`` lays out the page and wires events; everything it calls lives here. Importing this package loads
no model and changes nothing in the process: ``Runtime.load()`` loads the model, ``Runtime.prepare_to_serve()``
tunes the process and warms the paths up, and both are called by ``app.py`` (or a test) when it chooses.

- ``runtime``: the shared model and the scratch folder for downloads.
- ``limits``: what one request may cost (seconds, file size, batch size), how long uploads are kept.
- ``session``: what one visitor changed (a named calibration, hand-set thresholds) and how it is kept in the
  browser across reloads.
- ``views``: pure functions of an ``Analysis`` (or a calibration) to Markdown, HTML and pictures.
- ``serving``: turning our errors into one message, upload quirks, CSV safety, the page's CSS and script.
- ``handlers``: ``Page``, the event handlers of the Analyze, Batch and Adapt tabs, returning dicts keyed by
  component; they live by tab in ``analyze``, ``batch`` and ``adapt``, and share ``page``.
- ``live``: the handlers of the Listen live tab.
"""
