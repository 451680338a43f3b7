"""The one place where third-party log lines are filtered: only notices that this project cannot fix at the cause.

- transformers, on importing diffusers' SDXL pipeline: "`CLIPImageProcessor` requires torchvision (not
  installed); falling back to `CLIPImageProcessorPil`": the PIL fallback is what InstantID needs (it uses no
  CLIP image processor at all), and torchvision is not a dependency.
- diffusers 0.42, inside ``UNet2DConditionModel._load_ip_adapter_weights``: "There are modules in ... that should
  be kept in float32: []": a cast to the UNet's own dtype, logged even when the list of such modules is empty.
  Our own casts go through :func:`instantid.loading.cast_modules`, which does not log it.
Anything else (and these two with a non-empty module list) still reaches the log.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# (logger name, text that marks the notice): matched as substrings of the formatted message
KNOWN_NOTICES: tuple[tuple[str, str], ...] = (
    ("transformers.utils.import_utils", "requires torchvision (not installed); falling back to"),
    ("diffusers.models.modeling_utils", "that should be kept in float32: []."),
)


class KnownNoticeFilter(logging.Filter):
    """Drops records whose message contains ``marker``."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop the record when it carries the known notice."""
        return self.marker not in record.getMessage()


def install() -> None:
    """Attach the filters to the emitting loggers (idempotent; cheap: imports nothing)."""
    for name, marker in KNOWN_NOTICES:
        target = logging.getLogger(name)
        if not any(isinstance(f, KnownNoticeFilter) and f.marker == marker for f in target.filters):
            target.addFilter(KnownNoticeFilter(marker))
