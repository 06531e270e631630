"""Where the vault keeps things: SQLAlchemy Core tables and engines, and dataset files.

Storage knows nothing of policy or keys' meaning; it stores what it is given.
"""
