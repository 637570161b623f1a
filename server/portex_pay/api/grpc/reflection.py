"""Server reflection that carries the proto's comments.

The generated `_pb2` modules hold descriptors without source info, so plain reflection would let
`grpcurl describe` show the contract but none of its documentation. `make proto` also writes a
descriptor set with source info (`portex/descriptor_set.binpb`); this pool answers reflection
from it, falling back to the default pool for everything else (health, reflection itself). It
also resolves method names (`pkg.Service.Method`), which the default pool does not.

The reflection service answers under both its names, `grpc.reflection.v1alpha.ServerReflection`
(older grpcurl) and `grpc.reflection.v1.ServerReflection` (newer grpcurl and grpcui ask for it
first): one servicer behind both. grpcio-reflection ships only v1alpha, and v1 is the same proto
under another package (field for field the same messages, so the same bytes), so v1's handler
decodes and encodes with v1alpha's messages; v1's file descriptor (v1alpha's, renamed) joins the
default pool so that the v1 service can itself be described.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


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


def _add_v1_descriptor() -> None:
    """Adds grpc/reflection/v1/reflection.proto to the default pool: v1alpha's file under v1's
    package (its type references, all fully qualified, renamed with it)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return  # added already (another server in this process), or shipped by a newer package
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for item in message.field:
            if item.type_name:  # a message field's (assigning "" would mark a scalar's as set)
                item.type_name = item.type_name.replace(old, new, 1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection (with the proto's comments) for `service_names` and for itself, under
    v1alpha and v1."""
    _add_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names, pool=DocumentedPool())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
