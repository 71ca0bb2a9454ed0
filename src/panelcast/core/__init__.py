"""Foundations every other subpackage uses: typed configuration (``config``), errors
(``errors``), the column and period vocabulary (``periods``), atomic I/O (``io``) and the
stage runner (``stage``). Imports nothing else of panelcast."""
