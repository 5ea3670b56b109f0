"""The shared harness of the benchmarks (see benchmarks/README.md, "The harness").

- ``server``: ``OwnServer`` (``pushgate serve`` on a temp data dir; ``account()`` for set-up
  requests, ``Account.instapush_app``), ``require_loopback``,
  ``run_loop`` (uvloop when installed), ``Clock`` (a run's time limit);
- ``http``: ``http_request``/``check`` (one blocking request), raw keep-alive clients
  (``StatusConn``, ``ResponseConn``, ``HttpPool``), ``raw_post``, ``closed_loop``,
  ``closed_loop_phase``, ``post_json``, ``header``;
- ``stats``: ``percentiles``, ``median``, ``ratio``, ``summary_ms``, ``sum_counts``;
- ``machine``: CPU seconds of processes and of the machine, RSS and its peak, open-file limits,
  ``machine_info``, ``source_version``;
- ``report``: ``add_output_options``, ``run_and_report`` (table or JSON, exit code),
  ``target``/``print_targets`` (PASS/FAIL lines), ``fmt``, ``utc_now``;
- ``child``: ``Child`` (a forked helper process driven over a pipe), ``ask_all``;
- ``scratch_db``: scratch PostgreSQL databases and migrated scratch ``Database``s,
  ``per_engine``, ``add_engine_options``.

``HarnessError`` (here) means the benchmark could not measure; ``run_and_report`` turns it
into exit code 2.
"""

from __future__ import annotations


class HarnessError(RuntimeError):
    """The benchmark could not measure (server did not start, setup failed, ...)."""
