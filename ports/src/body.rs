//! The body type that crosses ports: a boxed stream of byte chunks, so a
//! request or an answer is never gathered in memory on its way through.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed HTTP body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Reads a whole body, refusing one larger than `limit`. (Not
/// `http_body_util::Limited`: its boxed error makes the handler's future
/// fail the `Send` check.)
///
/// # Errors
/// Why the body could not be read, in words.
pub async fn read_bounded(mut body: Body, limit: usize) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| format!("the body broke off: {error}"))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(format!("the body is larger than {limit} bytes"));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn chunks(parts: Vec<Result<&'static [u8], &'static str>>) -> Body {
        let frames = parts.into_iter().map(|part| {
            part.map(|bytes| Frame::data(Bytes::from_static(bytes)))
                .map_err(BoxError::from)
        });
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = chunks(vec![Ok(b"ab"), Ok(b"cd")]);
        assert_eq!(read_bounded(body, 4).await.unwrap(), b"abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_the_limit_named() {
        let body = chunks(vec![Ok(b"ab"), Ok(b"cde")]);
        let why = read_bounded(body, 4).await.unwrap_err();
        assert_eq!(why, "the body is larger than 4 bytes");
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_says_why() {
        let body = chunks(vec![Ok(b"ab"), Err("connection reset")]);
        let why = read_bounded(body, 64).await.unwrap_err();
        assert_eq!(why, "the body broke off: connection reset");
    }
}
