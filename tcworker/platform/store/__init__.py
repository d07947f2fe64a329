"""SQLite storage of the local platform: one writer thread, numbered immutable migrations."""
