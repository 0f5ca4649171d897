"""The service (用): exchange, REST API, websocket dispatch, bus, CLI and demo."""
