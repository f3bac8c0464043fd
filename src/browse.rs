//! `/browse/*` (reference §6.3): file listing, download, delete and rename
//! in a volume's data or on the host, through the confined `Files` port.

use berth_domain::browse::{
    check_volume_id, confine, confine_host_path, parse_range, query_value, BrowseRoot, ConfinedPath,
};
use berth_domain::error::AgentError;
use berth_domain::routing::BrowseOp;
use berth_ports::{Body, Files, FilesError};
use http::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    LAST_MODIFIED, RANGE,
};
use http::{Request, Response, StatusCode};

use crate::responses;

/// The largest rename payload berth reads: two paths.
const MAX_RENAME_BODY: usize = 64 * 1024;

/// Serves one browse operation. `legacy_volume` is the `/v1/browse/{id}/…`
/// path segment.
pub async fn browse<F: Files>(
    files: &F,
    op: BrowseOp,
    legacy_volume: Option<String>,
    request: Request<Body>,
) -> Result<Response<Body>, AgentError> {
    let query = request.uri().query().map(str::to_string);
    let root = browse_root(legacy_volume.or_else(|| query_value(query.as_deref(), "volumeID")))?;
    match op {
        BrowseOp::List => {
            let path = required_path(&root, query.as_deref())?;
            let entries = files.list(&root, &path).await.map_err(|error| {
                failure(error, "Unable to list files inside specified directory")
            })?;
            let listed: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| serde_json::json!({"Name": e.name, "Size": e.size, "Dir": e.dir, "ModTime": e.mod_time}))
                .collect();
            Ok(responses::json(&serde_json::Value::Array(listed)))
        }
        BrowseOp::Get => {
            let path = required_path(&root, query.as_deref())?;
            download(files, &root, &path, request.headers().get(RANGE)).await
        }
        BrowseOp::Delete => {
            let path = required_path(&root, query.as_deref())?;
            files
                .delete(&root, &path)
                .await
                .map_err(|error| failure(error, "Unable to remove file"))?;
            Ok(responses::no_content())
        }
        BrowseOp::Rename => {
            let (from, to) = rename_payload(&root, request).await?;
            files
                .rename(&root, &from, &to)
                .await
                .map_err(|error| failure(error, "Unable to rename file"))?;
            Ok(responses::no_content())
        }
        BrowseOp::Put => {
            upload(files, &root, request).await?;
            Ok(responses::no_content())
        }
    }
}

fn browse_root(volume: Option<String>) -> Result<BrowseRoot, AgentError> {
    match volume.filter(|v| !v.is_empty()) {
        Some(volume) => {
            check_volume_id(&volume)?;
            Ok(BrowseRoot::Volume(volume))
        }
        None => Ok(BrowseRoot::Host),
    }
}

fn confine_for(root: &BrowseRoot, path: &str) -> Result<ConfinedPath, AgentError> {
    match root {
        BrowseRoot::Volume(_) => confine(path),
        BrowseRoot::Host => confine_host_path(path),
    }
}

fn required_path(root: &BrowseRoot, query: Option<&str>) -> Result<ConfinedPath, AgentError> {
    let path = query_value(query, "path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            AgentError::new(
                400,
                "Invalid query parameter: path",
                "Missing query parameter",
            )
        })?;
    confine_for(root, &path)
}

/// The status each failure deserves, with the reference's message.
fn failure(error: FilesError, message: &str) -> AgentError {
    match error {
        FilesError::NotFound(why) => AgentError::new(404, message, why),
        FilesError::Outside(why) => AgentError::new(403, "Access to this path is not allowed", why),
        FilesError::NotEmpty(why) => {
            AgentError::new(409, message, format!("{why}: the folder is not empty"))
        }
        FilesError::Other(why) => AgentError::new(500, message, why),
    }
}

async fn download<F: Files>(
    files: &F,
    root: &BrowseRoot,
    path: &ConfinedPath,
    range_header: Option<&HeaderValue>,
) -> Result<Response<Body>, AgentError> {
    let size = files
        .size(root, path)
        .await
        .map_err(|error| failure(error, "Unable to open file"))?;
    let range = match parse_range(range_header.and_then(|h| h.to_str().ok()), size) {
        Ok(range) => range,
        Err(()) => {
            let mut refused = responses::error_response(&AgentError::new(
                416,
                "Requested range not satisfiable",
                format!("The file has {size} bytes"),
            ));
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                refused.headers_mut().insert(CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    let read = files
        .read(root, path, range)
        .await
        .map_err(|error| failure(error, "Unable to open file"))?;
    let mut response = Response::new(read.body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(read.length));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(modified) = read.modified {
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            headers.insert(LAST_MODIFIED, value);
        }
    }
    if let Some(name) = path.file_name() {
        let safe: String = name
            .chars()
            .map(|c| if c == '"' || c.is_control() { '_' } else { c })
            .collect();
        if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
            headers.insert(CONTENT_DISPOSITION, value);
        }
    }
    if let Some(range) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {}-{}/{}", range.first, range.last, read.total);
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RenamePayload {
    #[serde(default)]
    current_file_path: String,
    #[serde(default)]
    new_file_path: String,
}

async fn rename_payload(
    root: &BrowseRoot,
    request: Request<Body>,
) -> Result<(ConfinedPath, ConfinedPath), AgentError> {
    let invalid = |details: &str| AgentError::new(400, "Invalid request payload", details);
    let body = berth_ports::read_bounded(request.into_body(), MAX_RENAME_BODY)
        .await
        .map_err(|error| invalid(&error))?;
    let payload: RenamePayload =
        serde_json::from_slice(&body).map_err(|error| invalid(&error.to_string()))?;
    if payload.current_file_path.is_empty() {
        return Err(invalid("Current file path is invalid"));
    }
    if payload.new_file_path.is_empty() {
        return Err(invalid("New file path is invalid"));
    }
    Ok((
        confine_for(root, &payload.current_file_path)?,
        confine_for(root, &payload.new_file_path)?,
    ))
}

/// A file being uploaded before the `Path` field said where it goes: it
/// waits, complete, under a staging name in the root.
struct Staged {
    staging: ConfinedPath,
    name: String,
}

/// `multipart/form-data` with a `file` and its target folder `Path`, in
/// either order (Portainer sends the file first), streamed to disk.
async fn upload<F: Files>(
    files: &F,
    root: &BrowseRoot,
    request: Request<Body>,
) -> Result<(), AgentError> {
    let invalid = |details: &str| AgentError::new(400, "Invalid request payload", details);
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let boundary =
        multer::parse_boundary(content_type).map_err(|error| invalid(&error.to_string()))?;
    let mut multipart = multer::Multipart::new(
        http_body_util::BodyDataStream::new(request.into_body()),
        boundary,
    );
    let mut folder: Option<ConfinedPath> = None;
    let mut staged: Option<Staged> = None;
    let mut uploaded = false;
    let outcome: Result<(), AgentError> = async {
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|error| invalid(&error.to_string()))?
        {
            match field.name() {
                Some("Path") => {
                    let text = field
                        .text()
                        .await
                        .map_err(|error| invalid(&error.to_string()))?;
                    let target = confine_for(root, &text)?;
                    if let Some(waiting) = &staged {
                        files
                            .place(root, &waiting.staging, &target, &waiting.name)
                            .await
                            .map_err(|error| failure(error, "Error saving file to disk"))?;
                        // Only now is it no longer waiting (a failed move is cleaned up below).
                        staged = None;
                        uploaded = true;
                    }
                    folder = Some(target);
                }
                Some("file") => {
                    let name = plain_file_name(field.file_name())?;
                    let body = field_body(field);
                    match &folder {
                        Some(target) => {
                            files
                                .write(root, target, &name, body)
                                .await
                                .map_err(|error| failure(error, "Error saving file to disk"))?;
                            uploaded = true;
                        }
                        None => {
                            let staging = format!(".berth-staged-{}-{name}", std::process::id());
                            files
                                .write(root, &confine("")?, &staging, body)
                                .await
                                .map_err(|error| failure(error, "Error saving file to disk"))?;
                            staged = Some(Staged {
                                staging: confine(&staging)?,
                                name,
                            });
                        }
                    }
                }
                // Other fields are read past and ignored.
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    if let Some(waiting) = staged {
        // A file whose Path never came (or an error after it arrived).
        let _ = files.delete(root, &waiting.staging).await;
        outcome?;
        return Err(invalid("Invalid file path"));
    }
    outcome?;
    if !uploaded {
        return Err(invalid("Http: no such file"));
    }
    Ok(())
}

/// The uploaded file's name must be a plain name: no folders, no `..`.
fn plain_file_name(name: Option<&str>) -> Result<String, AgentError> {
    let name = name.unwrap_or_default();
    let confined = confine(name)?;
    match confined.components() {
        [single] if single == name => Ok(single.clone()),
        _ => Err(AgentError::new(
            400,
            "Invalid request payload",
            "Invalid file name",
        )),
    }
}

fn field_body(field: multer::Field<'static>) -> Body {
    use futures_util::TryStreamExt;
    use http_body_util::StreamBody;
    let frames = field
        .map_ok(hyper::body::Frame::data)
        .map_err(|error| -> berth_ports::BoxError { Box::new(error) });
    http_body_util::BodyExt::boxed_unsync(StreamBody::new(frames))
}
