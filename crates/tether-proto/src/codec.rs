//! The gRPC codec of the tunnel: prost, with small initial buffers.
//!
//! tonic's default codec gives every stream an 8 KiB encode and an 8 KiB decode buffer up
//! front. A tunnel stream is long-lived and mostly idle (heartbeats, small requests and
//! results), and a server holds one per connected runner, so it starts at 1 KiB; the buffers
//! still grow to the largest message they carry (a 64 KiB log chunk).

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size of each stream's encode and decode buffer.
pub const INITIAL_BUFFER_BYTES: usize = 1024;

/// Encoded bytes after which the encoder yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER_BYTES, YIELD_THRESHOLD)
}

/// The codec the generated client and server use (`codec_path` in `build.rs`).
#[derive(Debug, Clone)]
pub struct TunnelCodec<T, U> {
    _pd: std::marker::PhantomData<(T, U)>,
}

impl<T, U> Default for TunnelCodec<T, U> {
    fn default() -> Self {
        Self {
            _pd: std::marker::PhantomData,
        }
    }
}

impl<T, U> Codec for TunnelCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
