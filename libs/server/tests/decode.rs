//! Requests the server cannot decode are INVALID_ARGUMENT, over real gRPC:
//! raw bytes in a gRPC frame, sent on loopback to a served route
//! (grpc.health.v1.Health/Check, which every GrpcServer serves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use prost::bytes::{Buf as _, BufMut as _};
use reporunner_server::GrpcServer;
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Endpoint,
};

/// Sends and receives message bytes as they are, unchecked.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// Calls Health/Check with `message` as the request's bytes.
async fn check_with(message: Vec<u8>) -> Result<Vec<u8>, Status> {
    let (addr, shutdown) = GrpcServer::new().spawn_on_loopback().await.unwrap();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let result = grpc
        .unary(tonic::Request::new(message), path, RawCodec)
        .await
        .map(tonic::Response::into_inner);
    shutdown.cancel();
    result
}

#[tokio::test]
async fn garbage_protobuf_is_invalid_argument() {
    // Field 1 with wire type 7, which does not exist.
    let status = check_with(vec![0x0f, 0xff, 0xff, 0xff]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("the request could not be decoded: "),
        "{status:?}"
    );
    assert!(status.message().contains("wire type"), "{status:?}");
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field_is_invalid_argument() {
    // HealthCheckRequest.service (field 1, length-delimited) = 0xff 0xfe.
    let status = check_with(vec![0x0a, 0x02, 0xff, 0xfe]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "the request could not be decoded: HealthCheckRequest.service: invalid string value: data is not UTF-8 encoded",
    );
}

#[tokio::test]
async fn a_well_formed_request_still_works() {
    // HealthCheckRequest { service: "" }: the server itself, SERVING.
    let reply = check_with(Vec::new()).await.unwrap();
    // HealthCheckResponse { status: SERVING (1) }.
    assert_eq!(reply, vec![0x08, 0x01]);
    // And an unknown service is still NOT_FOUND, untouched by the layer.
    let status = check_with(vec![0x0a, 0x02, b'n', b'o']).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
