"""Queue engines: where jobs wait for workers (see ``base.QueueEngine``)."""
