"""Business logic over a session. Services never commit: the caller's unit of work does."""
