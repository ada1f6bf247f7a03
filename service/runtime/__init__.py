"""The process around the app: the gunicorn worker and its HTTP/1.1 writes, lifecycle, logs, metrics."""
