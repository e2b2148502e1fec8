"""Reading traces: the terminal tree (``tree``), latency statistics (``stats``), and the
helpers that keep recorded, untrusted strings inert when printed (``escape``)."""
