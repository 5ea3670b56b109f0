"""Transports: how a delivery leaves Pushgate (see ``base.Transport``)."""
