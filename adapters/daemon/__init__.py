"""The live daemon (``tradeloop run``): the same ``Engine`` as replay, fed by the MQTT
session, every input journaled before the engine acts on it.

Live and replay differ only here: the clock is a ``ReplayClock`` advanced by journaled
receive times, the source is the session's inbox and the router depends on the mode:

==========  =================================================================
mode        router
==========  =================================================================
``shadow``  ``SendOnly(ShadowSender)``: intended orders logged, nothing sent
``paper``   ``SimulatedVenue`` from ``[venue.sim]``, driven on receive time
``live``    ``SendOnly(QueueSender)``: QoS 1 on the OMS's orders topic
==========  =================================================================

Modules, each importing only the ones above it in this list:

- ``core``: the live core (``LiveCore``: journal, commit, apply, one turn at a time), the
  one way an input reaches the engine live and in replay (``apply_input``,
  ``apply_record``), ``ReceiveClock``, ``FeedMonitor``, ``DecisionLog``; the loop's
  ordering guarantees are written there.
- ``assembly``: the engine the daemon runs (``build_router``, ``build_live_engine``,
  ``warm_up``) and its sending port held during the rebuild (``SwitchSender``).
- ``session``: the session's id, the broker session it talks to (``LiveSession``,
  ``mqtt_session``, ``mqtt_settings``) and its files next to the journal.
- ``background``: the task group of the background work and the consumer's wake-up.
- ``snapshots``: snapshots of the state (``snapshot_key``, ``load_snapshot``,
  ``SnapshotTaker``).
- ``rebuild``: the rebuild from the journal, each session on the versions it ran.
- ``reconcile``: reconciliation with the OMS at the start and after reconnects
  (``Reconciler``).
- ``switching``: the registry versions a session runs and the switches between them
  (``session_pins``, ``model_switcher``, ``ModelGovernance``).
- ``status``: the retained status, the models' figures on Prometheus and in the session
  file (``StatusBoard``).
- ``explaining``: the hand-off of the champion's signals to the explanations worker.
- ``run``: the composition and the loop (``Daemon``, ``run_daemon``): connect, consume,
  stop.
- ``cli``: ``tradeloop run`` and ``tradeloop live-demo``
  (``python -m adapters.daemon.cli run --config live.toml``).
"""
