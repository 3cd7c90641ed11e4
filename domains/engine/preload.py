"""Imported once by the sandbox's fork server, so every parsing child starts with PyMuPDF loaded.

Saves ~0.2 s per document. Only thread-free imports belong here: the fork server forks
each child, and forking a process that runs threads is unsafe (onnxruntime and numpy start
thread pools, so OCR and numpy stay out and load in the child).
"""
from __future__ import annotations

from .loaders import _import_pymupdf

_import_pymupdf(lean=True)
