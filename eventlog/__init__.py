"""The durable event log behind the bus (ground floor, beside catalog): the log message
and what a backend offers (:mod:`.message`), the SQL backend (:mod:`.sqllog`, SQLite or
PostgreSQL), Redis Streams (:mod:`.redislog`), the folder watch that wakes readers
(:mod:`.fswatch`) and :func:`.backend.open_event_log`.  Imports catalog only for its
database engine and process lock; nothing of the floors above."""
