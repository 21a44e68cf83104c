"""Test and evaluation helpers that do not ship in the runtime packages: a private
Mosquitto for tests and benchmarks (``mosquitto``), the hot-spot scenario generator and
scorer behind ``benchmarks/hotspot_eval.py`` (``hotspot_scenarios``, ``hotspot_scoring``)."""
