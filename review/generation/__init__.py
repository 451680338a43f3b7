"""Paired generation: conditions, inputs and uploads, the pair runner, sharding and image metrics."""
