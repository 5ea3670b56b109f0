"""HTTP plumbing shared by every API face (``api/``) and the device channel (``channel/``):
reading bodies, finding credentials and the client's address, the route class that
authenticates before it reads, error responses, timestamps. It imports neither of them."""
