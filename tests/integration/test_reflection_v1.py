"""Server reflection under `grpc.reflection.v1` beside v1alpha, over real gRPC on loopback.

The client is built from grpc-proto's v1 reflection.proto (below, as published; grpcio-reflection
ships only v1alpha), compiled by protoc into a pool of its own: nothing of the server's making.
It lists the services, and describes PaymentService (with the proto's comments) and the v1
reflection service itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from portex_pay.app import PortexApp

V1_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;

service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest)
      returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    ExtensionRequest file_containing_extension = 5;
    string all_extension_numbers_of_type = 6;
    string list_services = 7;
  }
}
message ExtensionRequest {
  string containing_type = 1;
  int32 extension_number = 2;
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ExtensionNumberResponse all_extension_numbers_response = 5;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ExtensionNumberResponse {
  string base_type_name = 1;
  repeated int32 extension_number = 2;
}
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse {
  int32 error_code = 1;
  string error_message = 2;
}
"""
METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def v1_messages(tmp_path: Path) -> tuple[Any, Any]:
    """grpc.reflection.v1's request and response classes, compiled from V1_PROTO."""
    source = tmp_path / "grpc" / "reflection" / "v1" / "reflection.proto"
    source.parent.mkdir(parents=True)
    source.write_text(V1_PROTO)
    out = tmp_path / "reflection.binpb"
    assert protoc.main(["protoc", f"-I{tmp_path}", f"--descriptor_set_out={out}", str(source)]) == 0
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)
    request, response = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))
        for name in ("ServerReflectionRequest", "ServerReflectionResponse")
    )
    return request, response


async def ask(service: PortexApp, tmp_path: Path, **fields: str) -> list[Any]:
    """One request per keyword, in one v1 stream; the responses."""
    request_class, response_class = v1_messages(tmp_path)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        call: Any = channel.stream_stream(
            METHOD,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        requests = [request_class(**{name: value}) for name, value in fields.items()]
        return [response async for response in call(iter(requests))]


async def test_a_v1_client_lists_the_services(service: PortexApp, tmp_path: Path) -> None:
    [response] = await ask(service, tmp_path, list_services="")
    assert response.WhichOneof("message_response") == "list_services_response"
    names = {entry.name for entry in response.list_services_response.service}
    assert names == {
        "portex.payment.v1.PaymentService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }


async def test_a_v1_client_describes_the_contract_and_reflection_v1(
    service: PortexApp, tmp_path: Path
) -> None:
    ours, reflection = await ask(
        service,
        tmp_path,
        file_containing_symbol="portex.payment.v1.PaymentService.Pay",
        list_services="",  # a second request on the same stream (kwargs keep their order)
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in ours.file_descriptor_response.file_descriptor_proto
    ]
    [payment] = [file for file in files if file.package == "portex.payment.v1"]
    assert "PaymentService" in {entry.name for entry in payment.service}
    comments = [location.leading_comments for location in payment.source_code_info.location]
    assert any("Creates an order and its Telegram Stars invoice link" in c for c in comments)
    assert reflection.WhichOneof("message_response") == "list_services_response"
    [described] = await ask(
        service, tmp_path / "again", file_containing_symbol="grpc.reflection.v1.ServerReflection"
    )
    [file] = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    assert (file.name, file.package) == (
        "grpc/reflection/v1/reflection.proto",
        "grpc.reflection.v1",
    )
    [method] = file.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type == ".grpc.reflection.v1.ServerReflectionResponse"
