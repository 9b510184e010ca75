"""``tradeloop oms-sim``: the OMS's rules without I/O (``simulated_oms``, ``disconnect``: cancel-on-disconnect) and its side of the bus (``oms_sim``)."""
