//! Chat sessions and messages; a session's events are in `stream_events` under its id.

use async_trait::async_trait;
use dgidgi_actors::agent::Agent;
use dgidgi_actors::chat::{ChatStore, Message, Session, SessionNotice};
use dgidgi_actors::events::{Fence, Owned, StreamEvent};
use dgidgi_actors::StoreFailure;
use sqlx::Row;

use super::cluster::held;
use super::events::{append_stmts, crash_point};
use super::read::Record;
use super::writer::Stmt;
use super::{for_actors, json_column, to_json, Error, Page, Paged, Result, Store};

const SESSION_COLUMNS: &str =
    "id, tenant_id, project_id, agent_id, title, system_prompt, model, providers, created_at, updated_at";
const MESSAGE_COLUMNS: &str =
    "id, session_id, role, content, status, reply_id, in_reply_to, usage, error, run_id, created_at, updated_at";

fn session_from_row(row: &Record) -> Result<Session> {
    Ok(Session {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        project_id: row.get("project_id")?,
        agent_id: row.get("agent_id")?,
        title: row.get("title")?,
        system_prompt: row.get("system_prompt")?,
        model: row.get("model")?,
        providers: json_column(row, "providers")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn optional_json<T: serde::de::DeserializeOwned>(row: &Record, column: &str) -> Result<Option<T>> {
    let text: Option<String> = row.get(column)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn message_from_row(row: &Record) -> Result<Message> {
    Ok(Message {
        id: row.get("id")?,
        session_id: row.get("session_id")?,
        role: row.get("role")?,
        content: row.get("content")?,
        status: row.get("status")?,
        reply_id: row.get("reply_id")?,
        in_reply_to: row.get("in_reply_to")?,
        usage: optional_json(row, "usage")?,
        error: optional_json(row, "error")?,
        run_id: row.get("run_id")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

impl Store {
    pub async fn create_session(&self, session: &Session) -> Result<()> {
        let sql = format!("INSERT INTO chat_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
        let insert = Stmt::new(sql)
            .bind(&session.id)
            .bind(&session.tenant_id)
            .bind(&session.project_id)
            .bind(&session.agent_id)
            .bind(&session.title)
            .bind(&session.system_prompt)
            .bind(&session.model)
            .bind(to_json(&session.providers))
            .bind(&session.created_at)
            .bind(&session.updated_at);
        self.write_one(insert).await?;
        Ok(())
    }

    pub async fn get_session(&self, tenant_id: &str, id: &str) -> Result<Option<Session>> {
        self.tenant_row(
            &format!("SELECT {SESSION_COLUMNS} FROM chat_sessions"),
            tenant_id,
            id,
            session_from_row,
        )
        .await
    }

    pub async fn list_sessions(&self, tenant_id: &str, page: &Page) -> Result<Paged<Session>> {
        let select = format!("SELECT {SESSION_COLUMNS} FROM chat_sessions");
        self.page_where(
            &select,
            "tenant_id = $1",
            &[tenant_id],
            page,
            session_from_row,
            |s| &s.id,
        )
        .await
    }

    /// Deletes a session with its messages and events.
    pub async fn delete_session(&self, tenant_id: &str, id: &str) -> Result<bool> {
        // Its messages and events first, while the session shows they are the tenant's.
        const OF_THE_TENANT: &str =
            "EXISTS (SELECT 1 FROM chat_sessions WHERE id = $1 AND tenant_id = $2)";
        let unit = vec![
            Stmt::new(format!(
                "DELETE FROM chat_messages WHERE session_id = $1 AND {OF_THE_TENANT}"
            )),
            Stmt::new(format!(
                "DELETE FROM stream_events WHERE stream_id = $1 AND {OF_THE_TENANT}"
            )),
            Stmt::new("DELETE FROM chat_sessions WHERE id = $1 AND tenant_id = $2"),
        ];
        let unit = unit
            .into_iter()
            .map(|s| s.bind(id).bind(tenant_id))
            .collect();
        Ok(self.write(unit).await?[2].changed == 1)
    }

    /// A session's messages, newest first.
    pub async fn list_messages(
        &self,
        tenant_id: &str,
        session_id: &str,
        page: &Page,
    ) -> Result<Paged<Message>> {
        let select = format!("SELECT {MESSAGE_COLUMNS} FROM chat_messages");
        let filter = "tenant_id = $1 AND session_id = $2";
        let binds = [tenant_id, session_id];
        self.page_where(&select, filter, &binds, page, message_from_row, |m| &m.id)
            .await
    }
}

#[async_trait]
impl ChatStore for Store {
    async fn load_session(
        &self,
        id: &str,
    ) -> Result<Option<(Session, Vec<Message>, i64)>, StoreFailure> {
        let load = async {
            let sql = format!("SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE id = $1");
            let Some(row) = sqlx::query(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            else {
                return Ok(None);
            };
            let session = session_from_row(&(&row).into())?;
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = $1 ORDER BY id"
            );
            let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
            let messages = rows
                .iter()
                .map(|r| message_from_row(&r.into()))
                .collect::<Result<Vec<_>>>()?;
            let last = self.last_seq(id, &[]).await?;
            Ok(Some((session, messages, last)))
        };
        for_actors(load.await)
    }

    async fn unfinished_sessions(&self) -> Result<Vec<String>, StoreFailure> {
        let sql = format!(
            "SELECT DISTINCT m.session_id FROM chat_messages m JOIN chat_sessions s ON s.id = m.session_id \
             WHERE ((m.role = 'assistant' AND m.status = 'streaming') OR \
             (m.role = 'user' AND m.reply_id IS NOT NULL AND NOT EXISTS \
                (SELECT 1 FROM chat_messages r WHERE r.id = m.reply_id))) AND {}",
            super::cluster::claimable("s.", "$1", "$2")
        );
        let rows = sqlx::query(&sql)
            .bind(self.node_id())
            .bind(dgidgi_actors::time::now())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreFailure::from(Error::from(e)))?;
        rows.iter()
            .map(|r| {
                r.try_get("session_id")
                    .map_err(|e| StoreFailure::from(Error::from(e)))
            })
            .collect()
    }

    async fn load_agent(&self, tenant_id: &str, id: &str) -> Result<Option<Agent>, StoreFailure> {
        for_actors(self.get_agent(tenant_id, id).await)
    }

    async fn claim_session(&self, id: &str) -> Result<Option<i64>, StoreFailure> {
        for_actors(self.claim(&Owned::Session(id.to_string())).await)
    }

    async fn release_session(&self, id: &str, epoch: i64) -> Result<(), StoreFailure> {
        let release = Stmt::new(
            "UPDATE chat_sessions SET owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND epoch = $2 AND owner = $3",
        )
        .bind(id)
        .bind(epoch)
        .bind(self.node_id());
        for_actors(self.write_one(release).await.map(|_| ()))
    }

    async fn unanswered(&self, id: &str) -> Result<Vec<Message>, StoreFailure> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages m WHERE m.session_id = $1 AND m.role = 'user' \
             AND m.reply_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM chat_messages r WHERE r.id = m.reply_id) \
             ORDER BY m.id"
        );
        let load = async {
            let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
            rows.iter()
                .map(|r| message_from_row(&r.into()))
                .collect::<Result<Vec<_>>>()
        };
        for_actors(load.await)
    }

    async fn announce_session(&self, id: &str, notice: SessionNotice) -> Result<(), StoreFailure> {
        for_actors(self.announce_to_session_owner(id, notice).await)
    }

    async fn add_message(&self, tenant_id: &str, message: &Message) -> Result<(), StoreFailure> {
        let written = self.write_path.write(vec![message_row(tenant_id, message)]);
        for_actors(written.await.map(|_| ()))
    }

    async fn save_message(
        &self,
        tenant_id: &str,
        message: &Message,
        event: &StreamEvent,
        fence: Option<&Fence>,
    ) -> Result<(), StoreFailure> {
        let events = std::slice::from_ref(event);
        let mut unit: Vec<Stmt> = fence.map(|f| held(self.node_id(), f)).into_iter().collect();
        unit.push(message_row(tenant_id, message));
        unit.extend(append_stmts(&message.session_id, events));
        let written = self.write_path.write(unit).await.map(|_| ());
        if written.is_ok() {
            crash_point(events);
            self.announce(&message.session_id, events);
        }
        for_actors(written)
    }
}

/// The statement that stores message `m` of tenant `tenant_id`, or its new content,
/// status, usage and error.
pub(super) fn message_row(tenant_id: &str, m: &Message) -> Stmt {
    Stmt::new(
        "INSERT INTO chat_messages (id, session_id, tenant_id, role, content, status, reply_id, in_reply_to, \
         usage, error, created_at, updated_at, run_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET content = excluded.content, status = excluded.status, \
         usage = excluded.usage, error = excluded.error, updated_at = excluded.updated_at",
    )
    .bind(&m.id)
    .bind(&m.session_id)
    .bind(tenant_id)
    .bind(&m.role)
    .bind(&m.content)
    .bind(&m.status)
    .bind(&m.reply_id)
    .bind(&m.in_reply_to)
    .bind(m.usage.as_ref().map(to_json))
    .bind(m.error.as_ref().map(to_json))
    .bind(&m.created_at)
    .bind(&m.updated_at)
    .bind(&m.run_id)
}
