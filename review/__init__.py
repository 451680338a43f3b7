"""The blind review study: paired generation, the running study, statistics, the store, export, UI and CLIs."""
