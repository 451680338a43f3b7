"""The load and crash test of the review app, and the upload-memory benchmark (never imported by the app)."""
