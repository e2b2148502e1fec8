"""Reading traces: the terminal tree (``tree``), latency statistics (``stats``), the Chrome /
Perfetto timeline (``perfetto``), the HTML viewer (``view_model``, ``html``), the
walkthrough (``explain``), and the helpers that keep recorded, untrusted strings inert when
printed (``escape``)."""
