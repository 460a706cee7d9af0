"""The workloads, one module per family: ``requests`` (activate, pool attach, get, latency), ``bulk`` (import,
export, generate), ``startup`` (idle RSS, start to first answer), ``console`` (the console pages' hook). Each
workload is a function of the run's :class:`~bench.workloads.context.Context` returning its figures."""
