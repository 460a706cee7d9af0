"""The benchmark harness: ``python -m bench`` runs every workload of docs/performance.md against a server it starts
itself, each next to its database-only baseline in the same run, and prints one table (also written as JSON under
``bench/results/``).

Modules: ``server`` (start and stop ``promocodes serve``, RSS from /proc), ``database`` (fresh databases and the
seeded data), ``statements`` (the server's own SQL, read from the store's source), ``load`` (wrk, hey, and
measured child processes), ``baselines`` (pgbench, sqlite3 loops, COPY), ``workloads/`` (one module per family),
``report`` (the table and the JSON).
"""
