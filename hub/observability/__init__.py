"""What an operator sees of a running hub: Prometheus metrics (``metrics``), the readiness
probe (``readiness``), JSON logs and request ids (``logs``, ``requests``)."""
