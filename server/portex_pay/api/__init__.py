"""Entrypoints: gRPC servicers and interceptors, HTTP endpoints."""
