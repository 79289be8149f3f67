//! The files API: `POST /v1/files` (multipart, field `file`, with the user's own credential)
//! streams the upload to the file store, counting bytes as they arrive and refusing one byte
//! over the limit (images 10 MiB, other files 50 MiB) with 413 before reading further;
//! `GET /v1/files/{fileId}` streams it back to its uploader and to members of a room where it
//! was sent (404 for everyone else).

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{DefaultBodyLimit, Multipart, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use futures_util::StreamExt;
use object_store::{WriteMultipart, path::Path as ObjectPath};
use serde_json::json;
use switchboard_common::{DomainError, ErrorCode, Permission, RoomKey, room::exceeds_chars};
use switchboard_proto::messages as pmsg;

use super::{ApiError, ApiResult, Gw, caller};
use crate::{
    Gateway,
    files::{FileStore, is_image},
};

const MIB: u64 = 1_048_576;
/// Images (jpg, png, gif, webp) up to 10 MiB, other files up to 50 MiB.
pub(crate) const MAX_IMAGE_BYTES: u64 = 10 * MIB;
pub(crate) const MAX_FILE_BYTES: u64 = 50 * MIB;
/// Room for the multipart framing around the file: a body longer than the largest file plus
/// this is refused from its `Content-Length` alone, before anything is read.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;
const MAX_NAME_CHARS: usize = 255;

pub(super) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/v1/files",
            // The limits are enforced while streaming (below), per kind of file.
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/files/{file_id}", get(download))
}

fn too_large(limit: u64) -> ApiError {
    ApiError(DomainError::new(
        ErrorCode::PayloadTooLarge,
        format!("The file exceeds {} MB", limit / MIB),
    ))
}

/// The name a client gave, without any path, bounded; "file" when it gave none.
fn file_name(raw: Option<&str>) -> String {
    let base = raw
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .replace('\0', "");
    let base = if exceeds_chars(&base, MAX_NAME_CHARS) {
        base.chars().take(MAX_NAME_CHARS).collect()
    } else {
        base
    };
    if base.is_empty() {
        "file".to_string()
    } else {
        base
    }
}

/// Reads and drops what is left of a refused request's body, up to [`DRAIN_BYTES`], so that a
/// client still writing it reads the answer instead of a reset connection; a larger body is
/// cut off (the connection closes).
async fn drain(multipart: &mut Multipart) {
    let mut read = 0usize;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            read += chunk.len();
            if read > DRAIN_BYTES {
                return;
            }
        }
    }
}

/// The most of a refused upload read only to answer it cleanly.
const DRAIN_BYTES: usize = 1_048_576;

async fn upload(State(gw): Gw, headers: HeaderMap, mut multipart: Multipart) -> ApiResult {
    let user = match caller(&gw, &headers).await {
        Ok(Some(user)) => user,
        refused => {
            drain(&mut multipart).await;
            return Err(match refused {
                Err(e) => e.into(),
                _ => ApiError(DomainError::new(
                    ErrorCode::Forbidden,
                    "Uploads need a user's own credential",
                )),
            });
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FILE_BYTES + MULTIPART_OVERHEAD) {
        return Err(too_large(MAX_FILE_BYTES));
    }
    let invalid = |m: &str| ApiError(DomainError::validation(m.to_string()));
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| invalid(&format!("Invalid multipart body: {e}")))?
            .ok_or_else(|| invalid("A multipart field named `file` is required"))?;
        if field.name() != Some("file") {
            continue;
        }
        let name = file_name(field.file_name());
        let mime = field
            .content_type()
            .filter(|m| !m.is_empty() && m.len() <= 255 && !m.contains('\0'))
            .unwrap_or("application/octet-stream")
            .to_string();
        let limit = if is_image(&mime, &name) {
            MAX_IMAGE_BYTES
        } else {
            MAX_FILE_BYTES
        };
        let key = FileStore::new_key();
        let size = store_field(&gw, &key, field, limit).await?;
        let req = pmsg::CreateFileRequest {
            uploader_id: user.clone(),
            file_name: name,
            file_size: size as i64,
            mime_type: mime,
            storage_key: key.to_string(),
        };
        let c = &gw.core.clients;
        let created = c
            .call(
                "messages",
                "CreateFile",
                c.messages.clone().create_file(req),
            )
            .await;
        let f = match created {
            Ok(f) => f,
            Err(e) => {
                // No row: no object either.
                if let Err(del) = gw.files.store().delete(&key).await {
                    tracing::warn!(error = %del, %key, "orphan object not deleted");
                }
                return Err(e.into());
            }
        };
        return Ok((
            StatusCode::CREATED,
            Json(json!({
                "fileId": f.id,
                "fileName": f.file_name,
                "fileSize": f.file_size,
                "mimeType": f.mime_type,
            })),
        )
            .into_response());
    }
}

/// Streams one field into the store under `key`, at most `limit` bytes; answers its size.
/// Over the limit, or on any failure, the partial object is aborted.
async fn store_field(
    gw: &Gateway,
    key: &ObjectPath,
    mut field: axum::extract::multipart::Field<'_>,
    limit: u64,
) -> Result<u64, ApiError> {
    let upload = gw
        .files
        .store()
        .put_multipart(key)
        .await
        .map_err(DomainError::unavailable)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, crate::files::PART_BYTES);
    let mut size: u64 = 0;
    let outcome: Result<(), ApiError> =
        async {
            while let Some(chunk) = field.chunk().await.map_err(|e| {
                ApiError(DomainError::validation(format!("Upload interrupted: {e}")))
            })? {
                size += chunk.len() as u64;
                if size > limit {
                    return Err(too_large(limit));
                }
                writer
                    .wait_for_capacity(1)
                    .await
                    .map_err(DomainError::unavailable)?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
    match outcome {
        Ok(()) => {
            writer.finish().await.map_err(DomainError::unavailable)?;
            Ok(size)
        }
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, %key, "partial upload not aborted");
            }
            Err(e)
        }
    }
}

async fn download(State(gw): Gw, headers: HeaderMap, Path(file_id): Path<String>) -> ApiResult {
    let who = caller(&gw, &headers).await?;
    let not_found = || ApiError(DomainError::not_found("File not found"));
    let id = file_id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(not_found)?;
    let f = match gw.core.file(id).await {
        Ok(f) => f,
        Err(e) if e.code == ErrorCode::NotFound => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if let Some(user) = &who
        && user != &f.uploader_id
    {
        let mut allowed = false;
        for r in &f.rooms {
            let room = RoomKey::new(r.kind.clone(), r.id.clone());
            if gw.core.allowed(user, &room, Permission::Read).await? {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Err(not_found());
        }
    }
    let object = gw
        .files
        .store()
        .get(&ObjectPath::from(f.storage_key.as_str()))
        .await
        .map_err(DomainError::unavailable)?;
    let body = Body::from_stream(
        object
            .into_stream()
            .map(|r| r.map_err(std::io::Error::other)),
    );
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&f.mime_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(f.file_size as u64),
    );
    let encoded =
        percent_encoding::utf8_percent_encode(&f.file_name, percent_encoding::NON_ALPHANUMERIC);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_paths() {
        assert_eq!(file_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(file_name(Some("C:\\\\x\\\\y.txt")), "y.txt");
        assert_eq!(file_name(None), "file");
        assert_eq!(
            file_name(Some(&"a".repeat(400))).chars().count(),
            MAX_NAME_CHARS
        );
    }
}
