"""Using a trained factory model: scoring clips, the HTTP service, exports."""
