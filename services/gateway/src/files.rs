//! Storage of uploaded files' bytes: one interface (`object_store`'s) with two backends, a
//! local folder (the default, for `make run`) and an S3-compatible bucket (for a cluster).
//! Metadata lives in Postgres (the messages service); a row is written only once its object is
//! complete, and an object whose row could not be written is deleted.

use std::sync::Arc;

use anyhow::Context;
use object_store::{ObjectStore, aws::AmazonS3Builder, local::LocalFileSystem, path::Path};

use crate::config::Config;

/// The most bytes one upload may have in flight to the store: S3's smallest multipart part
/// (5 MiB), one part at a time, so an upload holds about two parts however large it is.
pub(crate) const PART_BYTES: usize = 5 * 1024 * 1024;

#[derive(Clone)]
pub(crate) struct FileStore {
    store: Arc<dyn ObjectStore>,
}

impl FileStore {
    /// The store `SWITCHBOARD_FILES_URL` names: `s3://bucket[/prefix]` or a local folder
    /// (created if missing).
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let url = config.files_url.as_str();
        let store: Arc<dyn ObjectStore> = if url.starts_with("s3://") {
            let mut b = AmazonS3Builder::from_env().with_url(url);
            if let Some(endpoint) = &config.files_s3_endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            Arc::new(
                b.build()
                    .with_context(|| format!("SWITCHBOARD_FILES_URL={url}"))?,
            )
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
            Arc::new(
                LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("SWITCHBOARD_FILES_URL={url}"))?,
            )
        };
        Ok(Self { store })
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where a new upload's object goes: a random key, so a failed upload never collides with
    /// a stored one.
    pub fn new_key() -> Path {
        Path::from(format!("files/{}", uuid::Uuid::new_v4()))
    }
}

/// An image by MIME type or by name: jpg, jpeg, png, gif, webp.
pub(crate) fn is_image(mime: &str, name: &str) -> bool {
    const MIMES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];
    const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "gif", "webp"];
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    MIMES.contains(&mime.to_ascii_lowercase().as_str()) || EXTENSIONS.contains(&ext.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_by_mime_or_name() {
        assert!(is_image("image/png", "x.bin"));
        assert!(is_image("application/octet-stream", "photo.JPEG"));
        assert!(!is_image("image/svg+xml", "x.svg"));
        assert!(!is_image("application/pdf", "paper.pdf"));
    }
}
