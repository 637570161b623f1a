"""The pure core: orders, their states and legal transitions, validation, domain errors. No I/O."""
