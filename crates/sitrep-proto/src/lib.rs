//! The sitrep wire contract, generated from `proto/sitrep/v1/*.proto` at build time.
//!
//! # Layout
//! - [`v1`]: messages, and the clients and servers of `ProviderService`, `SubscriberService`, `QueryService`
//!   and `AidService` (mutual aid, `proto/sitrep/v1/aid.proto`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of the contract, served through gRPC reflection.
//! - [`codec`]: the codec the generated services use: prost's, except that a message that cannot be decoded is
//!   `INVALID_ARGUMENT` (the caller sent it) rather than `INTERNAL`.
//! - [`convert`]: the conversions of the values both ends send (timestamps, metric values, reports, aid ids), to
//!   and from `sitrep-core`'s types.
//!
//! Only the crates at the edges depend on this one (`sitrep-server`, `sitrep-client`, `sitrep-feed`, `sitrep-cli`,
//! and tests): wire types stay at the edges, and the core does not know them.

pub mod convert;

/// Package `sitrep.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sitrep.v1");
}

/// The encoded `FileDescriptorSet` of the whole contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sitrep_descriptor");

pub mod codec {
    //! prost's codec for the generated clients and servers, with one difference: a message that cannot be decoded
    //! is answered `INVALID_ARGUMENT`, naming the message type, because the caller sent it; prost's codec says
    //! `INTERNAL`, which tells a trust's developer to look for the fault on the server.

    use tonic::Status;
    use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    pub struct Codec<T, U>(ProstCodec<T, U>);

    impl<T, U> Default for Codec<T, U> {
        fn default() -> Self {
            Codec(ProstCodec::default())
        }
    }

    impl<T, U> tonic::codec::Codec for Codec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = CallerDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            self.0.encoder()
        }

        fn decoder(&mut self) -> Self::Decoder {
            CallerDecoder(self.0.decoder())
        }
    }

    pub struct CallerDecoder<U>(ProstDecoder<U>);

    impl<U: prost::Message + Default> Decoder for CallerDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            self.0.decode(buf).map_err(|status| {
                let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or("message");
                Status::invalid_argument(format!("the message is not a valid {name}: {}", status.message()))
            })
        }

        fn buffer_settings(&self) -> BufferSettings {
            self.0.buffer_settings()
        }
    }
}
