"""gridlrt: the LOFAR Reduction Tools for the grid.

Takes LOFAR Long Term Archive files from tape to processed, uploaded results on grid worker
nodes, with a token pool (CouchDB or embedded SQLite) as the single source of truth.
"""

__version__ = "0.1.0"
