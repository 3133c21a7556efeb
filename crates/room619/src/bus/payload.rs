//! [`Payload`]: how a typed message becomes bytes and back, through the
//! codecs of [`rpc::codec`](crate::rpc::codec); [`Json`] for types that only
//! speak serde.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result, rpc::codec::Format};

/// A message type the bus can send and receive.
///
/// Implemented for every type that derives both `prost::Message` and serde's
/// `Serialize`/`Deserialize` (the shop's generated messages do): such a type
/// travels as JSON or protobuf, as `bus.format` or the sender chooses. Wrap a
/// type that only derives serde in [`Json`].
pub trait Payload: Sized + Send + 'static {
    /// Encodes the message, in `format` when the type speaks it; returns the
    /// bytes and the format actually used (it becomes the `Content-Type`).
    ///
    /// # Errors
    ///
    /// `Internal` when serialization fails.
    fn encode(&self, format: Format) -> Result<(Bytes, Format)>;

    /// Decodes a message that arrived in `format`.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when the bytes are not a message of this type.
    fn decode(format: Format, bytes: &[u8]) -> Result<Self>;
}

impl<T> Payload for T
where
    T: Serialize + DeserializeOwned + prost::Message + Default + 'static,
{
    fn encode(&self, format: Format) -> Result<(Bytes, Format)> {
        Ok((format.encode(self)?, format))
    }

    fn decode(format: Format, bytes: &[u8]) -> Result<Self> {
        format.decode(bytes)
    }
}

/// A message type that travels as JSON only (it derives serde but not
/// `prost::Message`).
///
/// ```
/// use room619::bus::{Json, Payload};
/// use room619::rpc::codec::Format;
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Shipped { order: u64 }
///
/// let (bytes, format) = Json(Shipped { order: 7 }).encode(Format::Protobuf).unwrap();
/// assert_eq!(format, Format::Json); // JSON whatever was asked
/// let Json(back) = Json::<Shipped>::decode(format, &bytes).unwrap();
/// assert_eq!(back, Shipped { order: 7 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

impl<T> Payload for Json<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn encode(&self, _format: Format) -> Result<(Bytes, Format)> {
        serde_json::to_vec(&self.0)
            .map(|bytes| (Bytes::from(bytes), Format::Json))
            .map_err(|err| Error::internal(format!("cannot encode the message as JSON: {err}")))
    }

    fn decode(format: Format, bytes: &[u8]) -> Result<Self> {
        if format != Format::Json {
            return Err(Error::invalid_argument(format!(
                "expected a JSON message, got {}",
                format.media_type()
            )));
        }
        serde_json::from_slice(bytes).map(Json).map_err(|err| {
            Error::invalid_argument(format!(
                "the message is not JSON of the expected shape (line {}, column {})",
                err.line(),
                err.column()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    struct Note {
        #[prost(string, tag = "1")]
        text: String,
    }

    #[test]
    fn prost_and_serde_types_travel_in_both_formats() {
        let note = Note { text: "hi".into() };
        for format in [Format::Json, Format::Protobuf] {
            let (bytes, used) = note.encode(format).unwrap();
            assert_eq!(used, format);
            assert_eq!(Note::decode(format, &bytes).unwrap(), note);
        }
    }

    #[test]
    fn garbage_is_an_invalid_argument() {
        let err = <Note as Payload>::decode(Format::Json, b"{not json").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        let err = Json::<Vec<u8>>::decode(Format::Protobuf, b"").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    }
}
