"""Storage: one thin layer over gfal2 (copy with retries and verification, stat, list, mkdir,
delete, checksums, dCache xattrs and bring-online) plus strict URL templates.

Knows nothing of tokens or steps: URL templates take a plain mapping of fields.

* :class:`Storage` (``gridlrt.storage.gfal``) is the only place that talks to gfal2;
* :mod:`gridlrt.storage.models` holds the pydantic results (:class:`StatInfo`,
  :class:`TransferResult`, :class:`TransferProgress`);
* :mod:`gridlrt.storage.templates` renders output locations (:func:`render_url`);
* :mod:`gridlrt.storage.urls` classifies URLs (schemes, joining, temp names);
* :mod:`gridlrt.storage.errors` turns gfal2 errors into :class:`gridlrt.errors.StorageError`.
"""

from __future__ import annotations

from gridlrt.storage.gfal import Storage
from gridlrt.storage.models import (
    BringOnlineResult,
    StatInfo,
    TransferProgress,
    TransferResult,
)
from gridlrt.storage.templates import render_url, template_fields

__all__ = [
    "BringOnlineResult",
    "StatInfo",
    "Storage",
    "TransferProgress",
    "TransferResult",
    "render_url",
    "template_fields",
]
