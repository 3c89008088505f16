"""``emoray report``: review sessions in the browser (see ``build.py``)."""
