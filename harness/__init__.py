"""Swarmbench's harness: everything but the servers and the report's rendering. Its groups:

- command line: :mod:`~harness.cli` (``swarmbench``), :mod:`~harness.arguments` (every check before any work),
  :mod:`~harness.stop` (Ctrl-C, SIGTERM, SIGHUP: stop and keep what finished);
- capacity: :mod:`~harness.capacity` (the search, a pure function), :mod:`~harness.verdict` (a trial's
  verdict from its cell), :mod:`~harness.capacity_run` (``swarmbench capacity``: trials as sweep cells);
- sweep: :mod:`~harness.sweep` (cell after cell), :mod:`~harness.assemble` (a cell from its run's files),
  :mod:`~harness.checks` (``--check``), :mod:`~harness.progress`, :mod:`~harness.target` and
  :mod:`~harness.probe` (what is loaded, and whether it answers);
- child processes: :mod:`~harness.processes`, :mod:`~harness.server_process`, :mod:`~harness.locust_run`,
  :mod:`~harness.locust_main` (the Locust children's entry point: Swarmbench's packages bound first),
  :mod:`~harness.worker` (``swarmbench worker``);
- observation: :mod:`~harness.server_sampler`, :mod:`~harness.kernel`, :mod:`~harness.machine`, :mod:`~harness.host`;
- result model: :mod:`harness.results` (cells, manifest, histogram file, the one writer);
- inside Locust: :mod:`harness.user` (the only part that imports locust or gevent), with the framing
  (:mod:`~harness.profiles`) and failure classes (:mod:`~harness.failures`) it shares with the command line.
"""
