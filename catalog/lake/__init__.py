"""The lake's table I/O: Iceberg tables (staging, publishing, versions, time travel),
position-delete files, prefetching of file reads and the pyiceberg adapter (D28)."""
