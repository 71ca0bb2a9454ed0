"""One module per DVC stage: typed functions that take data and return data, composing
``data``, ``modelling``, ``monitoring`` and ``report``. No file I/O here: the scripts in
``stages/`` read the inputs named in ``params.paths``, call these and write the outputs."""
