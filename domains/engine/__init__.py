"""Pure-Python pipeline code for this stage; never imports Django (see DESIGN.md).

Ingestion: ``ingest_file(path, IngestConfig(), on_page)`` → ``IngestResult`` (see ``ingest``).
Importing this package is cheap: parsers (PyMuPDF, RapidOCR, python-docx) load on first use.
"""
