"""Use cases: pay, query, resume, authenticate, administer applications."""
