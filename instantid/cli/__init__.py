"""The engine's command lines, one module per command (dispatched by ``python -m instantid``)."""
