//! The one place that knows how wire messages become bytes (bincode 2, standard
//! configuration, with a size limit), so the encoding can change here alone.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode message")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("cannot decode message")]
    Decode(#[source] bincode::error::DecodeError),
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
}

// 8 MiB: the largest record (`Hello`, see ipc::MAX_RECORD_BYTES).
const LIMIT: usize = 8 << 20;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LIMIT>,
> {
    bincode::config::standard().with_limit::<LIMIT>()
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::serde::encode_to_vec(msg, config()).map_err(CodecError::Encode)?;
    if bytes.len() > LIMIT {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit: LIMIT,
        });
    }
    Ok(bytes)
}

/// Decodes exactly one message; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > LIMIT {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit: LIMIT,
        });
    }
    let (msg, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(CodecError::Decode)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::WorkerMsg;

    #[test]
    fn round_trip_and_garbage() {
        let msg = WorkerMsg::Pong {
            seq: 7,
            active: 3,
            total: 99,
        };
        let bytes = encode(&msg).expect("encode");
        assert_eq!(decode::<WorkerMsg>(&bytes).expect("decode"), msg);
        assert!(decode::<WorkerMsg>(&[0xff, 0xff, 0xff]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<WorkerMsg>(&long),
            Err(CodecError::Trailing(1))
        ));
    }
}
