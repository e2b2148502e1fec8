"""wstrace: every stage of a WebSocket connection on uvicorn, as OpenTelemetry spans."""
