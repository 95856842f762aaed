//! Stored responses: one SQLite file in the user data folder (`responses.sqlite3`), created
//! owner-only, in WAL mode so a server killed mid-write leaves it readable. Each row holds the
//! response object as the API returns it, the input items of its turn, and the conversation
//! before its output (what `previous_response_id` continues from). Rows older than the retention
//! are deleted as new ones are written.
//!
//! A response still running when its server stopped can never finish: the next server to open
//! the file marks such rows (written by another server process) as failed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// The file's schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the response store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("the response store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the response store {path}: a stored row is not valid JSON ({source})")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error(
        "the response store {path} was written by a newer Hearth (schema {found}, this one reads {SCHEMA_VERSION})"
    )]
    NewerSchema { path: PathBuf, found: i64 },
}

/// One stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// The response object (`"object": "response"`).
    pub body: Value,
    /// This turn's input items, each with its `id`.
    pub input_items: Vec<Value>,
    /// The items before this response's output: the previous response's conversation, then
    /// this turn's input items (instructions are not part of it, as in OpenAI's API).
    pub history: Vec<Value>,
    /// Whether it was created with `background: true` (only those can be cancelled).
    pub background: bool,
}

impl StoredResponse {
    /// The conversation a response continuing from this one starts with.
    pub fn conversation(&self) -> Vec<Value> {
        let output = self.body.get("output").and_then(Value::as_array).cloned().unwrap_or_default();
        self.history.iter().cloned().chain(output).collect()
    }

    pub fn status(&self) -> &str {
        self.body.get("status").and_then(Value::as_str).unwrap_or_default()
    }
}

/// The store, opened on first use so a server that never stores a response creates no file.
pub struct ResponseStore {
    path: PathBuf,
    retention_days: u32,
    /// This server process: rows it writes carry it, so the next process knows which were
    /// left running.
    instance: String,
    conn: Mutex<Option<Connection>>,
}

impl ResponseStore {
    pub fn new(path: PathBuf, retention_days: u32) -> Self {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        Self { path, retention_days, instance, conn: Mutex::new(None) }
    }

    /// `responses.sqlite3` in the user data folder.
    pub fn in_user_data(dir: &Path, retention_days: u32) -> Self {
        Self::new(dir.join("responses.sqlite3"), retention_days)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// Runs `f` on the open connection, opening (and creating, when `create`) the file first.
    /// `Ok(None)` when the file does not exist and `create` is false.
    fn with<T>(
        &self,
        create: bool,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        // A panic while the lock was held cannot leave SQLite's own state half-written.
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            if !create && !self.path.exists() {
                return Ok(None);
            }
            *guard = Some(self.open()?);
        }
        match guard.as_ref() {
            Some(conn) => f(conn).map(Some),
            None => Ok(None),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Created owner-only before SQLite opens it: SQLite gives its -wal and -shm files the
        // database file's permissions.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let file =
                std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path).map_err(io)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let conn = Connection::open(&self.path).map_err(|e| self.sqlite(e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| self.sqlite(e))?;
        // WAL: a process killed mid-transaction leaves the last committed state; NORMAL syncs
        // at checkpoints, which loses nothing when only the process dies.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| self.sqlite(e))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| self.sqlite(e))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| self.sqlite(e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path: self.path.clone(), found: version });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS responses (
                 id TEXT PRIMARY KEY,
                 created_at INTEGER NOT NULL,
                 instance TEXT NOT NULL,
                 status TEXT NOT NULL,
                 background INTEGER NOT NULL,
                 body TEXT NOT NULL,
                 input_items TEXT NOT NULL,
                 history TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS responses_created_at ON responses(created_at);
             PRAGMA user_version = 1;",
        )
        .map_err(|e| self.sqlite(e))?;
        self.mark_abandoned(&conn)?;
        self.prune(&conn)?;
        Ok(conn)
    }

    /// Rows another server process left queued or in progress can never finish.
    fn mark_abandoned(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut stmt = conn
            .prepare("SELECT id, body FROM responses WHERE status IN ('queued', 'in_progress') AND instance != ?1")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![self.instance], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.sqlite(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sqlite(e))?;
        for (id, body) in rows {
            let mut body: Value = serde_json::from_str(&body).map_err(|e| self.corrupt(e))?;
            body["status"] = Value::String("failed".into());
            body["error"] = serde_json::json!({
                "code": "server_error",
                "message": "the server stopped before this response finished",
            });
            conn.execute(
                "UPDATE responses SET status = 'failed', body = ?2 WHERE id = ?1",
                params![id, body.to_string()],
            )
            .map_err(|e| self.sqlite(e))?;
        }
        Ok(())
    }

    fn corrupt(&self, source: serde_json::Error) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), source }
    }

    /// Deletes rows past the retention.
    fn prune(&self, conn: &Connection) -> Result<(), StoreError> {
        if self.retention_days == 0 {
            return Ok(());
        }
        let cutoff = crate::serving::unix_now() as i64 - i64::from(self.retention_days) * 86_400;
        conn.execute("DELETE FROM responses WHERE created_at < ?1", params![cutoff]).map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// Writes a response (a new one, or a new state of one written before).
    pub fn put(&self, response: &StoredResponse) -> Result<(), StoreError> {
        let id = response.body.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let created = response.body.get("created_at").and_then(Value::as_i64).unwrap_or_default();
        let items = |v: &[Value]| Value::Array(v.to_vec()).to_string();
        self.with(true, |conn| {
            self.prune(conn)?;
            conn.execute(
                "INSERT INTO responses (id, created_at, instance, status, background, body, input_items, history)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, body = excluded.body",
                params![
                    id,
                    created,
                    self.instance,
                    response.status(),
                    response.background,
                    response.body.to_string(),
                    items(&response.input_items),
                    items(&response.history),
                ],
            )
            .map_err(|e| self.sqlite(e))?;
            Ok(())
        })
        .map(|_| ())
    }

    /// The stored response `id`, if there is one.
    pub fn get(&self, id: &str) -> Result<Option<StoredResponse>, StoreError> {
        let row = self.with(false, |conn| {
            conn.query_row(
                "SELECT body, input_items, history, background FROM responses WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, bool>(3)?)),
            )
            .optional()
            .map_err(|e| self.sqlite(e))
        })?;
        let Some(Some((body, input_items, history, background))) = row else {
            return Ok(None);
        };
        let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| self.corrupt(e));
        let list = |v: Value| match v {
            Value::Array(items) => items,
            _ => Vec::new(),
        };
        Ok(Some(StoredResponse {
            body: parse(&body)?,
            input_items: list(parse(&input_items)?),
            history: list(parse(&history)?),
            background,
        }))
    }

    /// Deletes `id`; whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = self.with(false, |conn| {
            conn.execute("DELETE FROM responses WHERE id = ?1", params![id]).map_err(|e| self.sqlite(e))
        })?;
        Ok(deleted.unwrap_or(0) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(id: &str, status: &str, created_at: u64) -> StoredResponse {
        StoredResponse {
            body: json!({"id": id, "object": "response", "status": status, "created_at": created_at,
                "output": [{"type": "message", "role": "assistant", "content": []}]}),
            input_items: vec![json!({"id": "msg_1", "type": "message", "role": "user", "content": []})],
            history: vec![json!({"type": "message", "role": "user", "content": "earlier"})],
            background: false,
        }
    }

    #[test]
    fn responses_round_trip_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResponseStore::in_user_data(dir.path(), 30);
        assert_eq!(store.get("resp_x").unwrap(), None, "no file yet");
        assert!(!store.path().exists(), "reading creates no file");
        let r = response("resp_x", "completed", crate::serving::unix_now());
        store.put(&r).unwrap();
        assert_eq!(store.get("resp_x").unwrap().as_ref(), Some(&r));
        assert_eq!(store.get("resp_x").unwrap().unwrap().conversation().len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(store.delete("resp_x").unwrap());
        assert!(!store.delete("resp_x").unwrap());
        assert_eq!(store.get("resp_x").unwrap(), None);
    }

    #[test]
    fn old_rows_are_pruned_and_abandoned_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let first = ResponseStore::in_user_data(dir.path(), 1);
        first.put(&response("resp_old", "completed", crate::serving::unix_now() - 3 * 86_400)).unwrap();
        first.put(&response("resp_running", "in_progress", crate::serving::unix_now())).unwrap();
        assert!(first.get("resp_old").unwrap().is_none(), "pruned at the next write");
        assert_eq!(first.get("resp_running").unwrap().unwrap().status(), "in_progress", "its own row");
        let next = ResponseStore::in_user_data(dir.path(), 1);
        let left = next.get("resp_running").unwrap().unwrap();
        assert_eq!(left.status(), "failed");
        assert_eq!(left.body["error"]["code"], "server_error");
    }
}
