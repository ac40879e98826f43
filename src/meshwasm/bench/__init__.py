"""What a proxy-wasm plugin costs a real Envoy: ``meshwasm bench PLUGIN.wasm``.

One Envoy per variant (no filter, the plugin, a baseline) and worker count, a
direct-response listener, Envoy pinned to one core and wrk to another. Rounds
are interleaved (every variant once per round) so a load change on the machine
hits all of them alike, and each variant's cost is taken against "no filter"
in the same round. The pieces, each small:

- :mod:`~meshwasm.bench.variants`: the Envoy config for each variant (pure);
- :mod:`~meshwasm.bench.load`: wrk, and reading its report;
- :mod:`~meshwasm.bench.procfs`: CPU, RSS, the VMs' linear memory, load, from ``/proc``;
- :mod:`~meshwasm.bench.envoy_log`: what Envoy's log says went wrong (pure);
- :mod:`~meshwasm.bench.envoys`: one pinned Envoy, its cold start and failure diagnosis;
- :mod:`~meshwasm.bench.runner`: the interleaved rounds, returning
  :mod:`~meshwasm.bench.measurements` (plain data);
- :mod:`~meshwasm.bench.stats`: medians, spreads, paired differences (pure);
- :mod:`~meshwasm.bench.report`: the report and its JSON (pure);
- :mod:`~meshwasm.bench.compare`: what changed between two reports (pure);
- :mod:`~meshwasm.bench.render`, :mod:`~meshwasm.bench.chart`: the tables and the PNG.
"""
