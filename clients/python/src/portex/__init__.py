"""Generated protobuf package. DO NOT EDIT: run `make proto`."""
