"""The command-line apps built on the library: ``keras-densenet`` and its subcommands.

``cli`` dispatches to one module per subcommand (``train``, ``classify``,
``export``, ``port``, ``summary``, ``benchmark``, ``validate``); ``recipes``,
``data``, ``labels``, ``run_dir`` (the run folder, resume), ``distribute``,
``precise_bn`` (settled BatchNorm statistics), ``precision``, ``throughput`` and
``plots`` serve training, ``images`` reads image files,
and ``source_models`` holds the source implementations that ``port`` checks
converted weights against. The library
(``keras_densenet``) never imports this package.
"""
