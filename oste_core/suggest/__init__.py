"""The suggestion stage's annotator side: sparse corrections, click and stroke seeds, and the refresh of
every suggestion after a correction (``refresh.py``)."""
