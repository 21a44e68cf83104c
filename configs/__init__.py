"""GridWatch's shipped configuration files, and how every process reads its config.

``default.yaml`` is every setting with its meaning (read by ``gridwatch.config``);
``station.example.yaml`` is an example edge station. Both are package data, reachable
through :mod:`importlib.resources` from a checkout and from an installed wheel alike.

Two small modules are the config contracts that several packages share, so they live here,
where every package may import them (``configs`` imports nothing of ours):
:mod:`configs.reader` reads a YAML file into a pydantic model with errors naming the file
and the field path; :mod:`configs.mqtt` is one broker connection's settings and the one
MQTT client factory, used by the edge box and the centre alike.
"""
