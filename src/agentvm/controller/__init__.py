"""The only place with loops, threads, clocks and queues: watchers, work queue, reconcile."""
