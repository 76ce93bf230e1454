//! Project workspaces over each tenant's storage: the files tools read and write, in the
//! platform folder (never through a symbolic link) or the tenant's bucket.

use std::sync::Arc;

use async_trait::async_trait;
use dgidgi_actors::tools::{FileStore, Workspaces};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{validate, Storage, StorageMode};

/// Project workspaces through each tenant's storage configuration.
#[async_trait]
impl Workspaces for Storage {
    async fn open(&self, tenant_id: &str, project_id: &str) -> Result<Arc<dyn FileStore>, String> {
        let record = self.record(tenant_id).await.map_err(|f| f.message)?;
        let root = self
            .tenant_root(tenant_id, &record, false)
            .await
            .map_err(|f| f.message)?;
        let project = PrefixStore::new(root, format!("projects/{project_id}"));
        let files = ObjectFiles(Arc::new(project));
        if record.mode != StorageMode::Platform {
            return Ok(Arc::new(files));
        }
        // A local folder: a symbolic link in it must not lead a tool out of it.
        let region = self.platform_region(tenant_id, &record).await;
        let folder = self
            .platform_root
            .join(region)
            .join(tenant_id)
            .join("projects")
            .join(project_id);
        Ok(Arc::new(NoLinks { folder, files }))
    }
}

/// A [`FileStore`] over an object store.
pub struct ObjectFiles(pub Arc<dyn ObjectStore>);

/// Platform storage's files, refusing any path that passes through a symbolic link (the
/// local file system would follow it wherever it points).
struct NoLinks {
    folder: std::path::PathBuf,
    files: ObjectFiles,
}

impl NoLinks {
    fn check(&self, path: &str) -> Result<(), String> {
        let mut at = self.folder.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(format!(
                    "'{path}' passes through a symbolic link, which workspace tools do not follow"
                ))
                }
                Ok(_) => {}
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl FileStore for NoLinks {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.check(path)?;
        self.files.put(path, bytes).await
    }

    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        self.check(path)?;
        self.files.get(path).await
    }

    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, String> {
        self.check(prefix)?;
        let found = self.files.list(prefix, max).await?;
        Ok(found
            .into_iter()
            .filter(|p| self.check(p).is_ok())
            .collect())
    }
}

fn object_path(path: &str) -> Result<Path, String> {
    Path::parse(path).map_err(|e| e.to_string())
}

#[async_trait]
impl FileStore for ObjectFiles {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.0
            .put(&object_path(path)?, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| validate::describe(&e).message)
    }

    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match self.0.get(&object_path(path)?).await {
            Ok(found) => found
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| validate::describe(&e).message),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(validate::describe(&e).message),
        }
    }

    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, String> {
        let prefix = (!prefix.is_empty())
            .then(|| object_path(prefix))
            .transpose()?;
        let mut found = Vec::new();
        let mut listing = self.0.list(prefix.as_ref());
        while let Some(meta) = listing
            .try_next()
            .await
            .map_err(|e| validate::describe(&e).message)?
        {
            found.push(meta.location.to_string());
            if found.len() >= max {
                break;
            }
        }
        Ok(found)
    }
}
