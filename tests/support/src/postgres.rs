//! A PostgreSQL database of one's own for a test or a benchmark, dropped when done.

use sqlx::{Connection, PgConnection};

/// A fresh database on the server of `admin_url`; dropped (even from a panicking test)
/// when this value is.
pub struct FreshDatabase {
    /// The new database's URL.
    pub url: String,
    admin_url: String,
    name: String,
}

impl FreshDatabase {
    /// Creates `dgidgi_<prefix>_<uuid>` through `admin_url` (a URL to any database of the
    /// server, `postgres://postgres@127.0.0.1:5432/test`).
    pub async fn create(admin_url: &str, prefix: &str) -> Result<Self, sqlx::Error> {
        let name = format!("dgidgi_{prefix}_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        let server = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(server, _)| server);
        Ok(Self {
            url: format!("{server}/{name}"),
            admin_url: admin_url.to_string(),
            name,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside an async runtime: a thread of its own runs the statement.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}
