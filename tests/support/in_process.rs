//! Requests handed straight to a `RequestHandler`, with no socket.

use berth_ports::{full_body, RequestHandler};
use http::{HeaderName, Request, Response};
use http_body_util::BodyExt;

/// Sends a request signed with the tests' Portainer identity (when
/// `signed`), plus `headers`, and collects the whole answer.
pub async fn call<H: RequestHandler>(
    handler: &H,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
    signed: bool,
) -> (Response<()>, Vec<u8>) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(full_body(body.to_string()))
        .unwrap();
    if signed {
        super::fixtures::portainer_identity().apply(request.headers_mut());
    }
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let response = handler
        .handle(request, "127.0.0.1:1".parse().unwrap())
        .await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, ()), bytes)
}
