"""An upload handler that stops reading a file once it passes the size limit."""
from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile


class SizeLimitUploadHandler(FileUploadHandler):
    """Skips (does not spool to disk) any file larger than VSM_MAX_UPLOAD_MB, remembering its name.

    Django has no per-file limit of its own: without this, a 5 GB upload would be written
    to a temp file before any view could refuse it.
    """

    def new_file(self, field_name, file_name, *args, **kwargs):
        self.current_name = file_name
        self.received = 0
        super().new_file(field_name, file_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.VSM_MAX_UPLOAD_MB * 1024 * 1024:
            self.request.vsm_oversized = [*getattr(self.request, "vsm_oversized", []), self.current_name]
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size):
        return None
