"""Everything people read: terminal tables (``terminal``, rich), Markdown and
JUnit summaries (``markdown``, ``junit``), the HTML reports and figures
(``report``); numbers always through ``format``. Reads finished objects;
computes nothing.
"""
