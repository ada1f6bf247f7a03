"""gunicorn settings, written for the person on call.

Every knob reads an environment variable, so ops can tune a replica without
editing this file. Units and sane ranges are in the comments.
"""

import os

wsgi_app = "service:create_app()"

# Where to listen. BIND wins; otherwise PORT on all interfaces of the host...
# except by default, where only loopback is served (a dev box stays private).
bind = [os.environ.get("BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]

# gevent: one worker process serves many requests concurrently while they wait
# on PostgreSQL, Redis or the client. psycopg2 is made cooperative per worker in
# create_app (service/green.py).
worker_class = "gevent"

# Worker processes (1 - 2x cores). CPU-bound Python work (JSON, routing) runs
# one request at a time per process, so about one worker per core; measure.
# Without REDIS_URL the default is 1: the in-process cache is per process.
workers = int(os.environ.get("WEB_CONCURRENCY") or ((os.cpu_count() or 1) if os.environ.get("REDIS_URL") else 1))

# Several workers cannot share an in-process cache: one worker would keep
# serving what another has just changed. Without Redis they run uncached.
if workers > 1 and not os.environ.get("REDIS_URL") and os.environ.get("CACHE_TYPE", "SimpleCache") == "SimpleCache":
    os.environ["CACHE_TYPE"] = "NullCache"

# Greenlets per worker = concurrent connections it holds, idle keep-alive
# connections included (100-5000). Keep it well above the load balancer's
# per-server maxconn divided by workers.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))

# Seconds an idle keep-alive connection stays open (2-120). Behind a proxy it
# must outlive the proxy's own idle timeout, or requests race with the close.
keepalive = int(os.environ.get("KEEPALIVE", "75"))

# Seconds of silence from a worker before the master kills it (10-120). The
# gevent worker heartbeats from a greenlet, so this only fires when the event
# loop itself is blocked: a last-resort detector, not a request timeout.
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))

# Seconds a worker gets to finish in-flight requests after SIGTERM (5-60).
# Keep it below the orchestrator's stop timeout.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))

# Pending connections the kernel queues per listener (64-4096).
backlog = int(os.environ.get("BACKLOG", "2048"))

# Never preload with gevent: importing the app in the master, before the
# worker monkey-patches, breaks ssl/socket patching and leaks connections
# across the fork.
preload_app = False

# Request limits are part of the attack surface; these are gunicorn's defaults
# stated explicitly: request line bytes, header count, header field bytes.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# gunicorn >= 25 opens a control socket in $HOME by default; containers often
# have a read-only home, and nothing here uses it.
control_socket_disable = True

# Trust X-Forwarded-* only from these proxy addresses (comma-separated, CIDR ok).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

accesslog = os.environ.get("ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
