"""GridWatch's shipped configuration files, as package data.

``default.yaml`` is every setting with its meaning (read by ``gridwatch.config``);
``station.example.yaml`` is an example edge station. Nothing here is code: the package only
makes the files reachable through :mod:`importlib.resources` from a checkout and from an
installed wheel alike.
"""
