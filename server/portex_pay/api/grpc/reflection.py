"""Server reflection that carries the proto's comments.

The generated `_pb2` modules hold descriptors without source info, so plain reflection would let
`grpcurl describe` show the contract but none of its documentation. `make proto` also writes a
descriptor set with source info (`portex/descriptor_set.binpb`); this pool answers reflection
from it, falling back to the default pool for everything else (health, reflection itself). It
also resolves method names (`pkg.Service.Method`), which the default pool does not.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool


def _load_descriptor_set() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    data = (resources.files("portex") / "descriptor_set.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {file.name: file for file in files}


class _FileWithSource:
    """A FileDescriptor whose CopyToProto includes the comments."""

    def __init__(self, descriptor: Any, sources: dict[str, descriptor_pb2.FileDescriptorProto]):
        self._descriptor = descriptor
        self._sources = sources
        self.name: str = descriptor.name

    @property
    def dependencies(self) -> list[_FileWithSource]:
        return [_FileWithSource(d, self._sources) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        source = self._sources.get(self.name)
        if source is not None:
            proto.CopyFrom(source)
        else:
            self._descriptor.CopyToProto(proto)


class DocumentedPool:
    """The subset of DescriptorPool that grpc_reflection uses."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()
        self._sources = _load_descriptor_set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileByName(self, name: str) -> _FileWithSource:
        return _FileWithSource(self._pool.FindFileByName(name), self._sources)

    def FindFileContainingSymbol(self, symbol: str) -> _FileWithSource:
        try:
            found = self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            service = self._pool.FindServiceByName(service_name)
            if method not in service.methods_by_name:
                raise
            found = service.file
        return _FileWithSource(found, self._sources)
