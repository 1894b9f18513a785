//! The SQL both databases share (`$N` placeholders work on both), on sqlx's `Any` driver.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::AnyPool;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{
    AuditFilter, Backend, Counts, Job, RequestFilter, Store, StoreError, TokenRecord, TokenScope,
    WriteCtx, postgres, sqlite,
};
use crate::audit::{AuditRecord, Verifier, VerifyReport, chain_hash};
use crate::domain::{Event, JobKind, JobSpec, Millis, PluginRef, Request, State, Transition};

/// The store, on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
    /// Where write transactions run. SQLite has one writer at a time: a pool of one
    /// connection queues writers in order (instead of spinning in SQLite's busy handler, which
    /// sleeps in growing steps) and keeps that connection's page cache warm. PostgreSQL writes
    /// through the main pool.
    pub(super) writer: AnyPool,
    /// The audit chain's head as this process last wrote it (checked on every append).
    head: Arc<std::sync::Mutex<Option<(i64, String)>>>,
}

/// One multi-row INSERT of audit records.
async fn insert_events(tx: &mut Tx, records: &[AuditRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO audit_events (seq, at, actor, action, subject, before, after, channel, request_id, plugin, prev_hash, hash) VALUES ",
    );
    for i in 0..records.len() {
        let b = i * 12;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(
            &(1..=12)
                .map(|k| format!("${}", b + k))
                .collect::<Vec<_>>()
                .join(", "),
        );
        sql.push(')');
    }
    let mut q = sqlx::query(&sql);
    for rec in records {
        let plugin = match &rec.plugin {
            Some(p) => Some(serde_json::to_string(p).map_err(|e| corrupt("plugin", e))?),
            None => None,
        };
        q = q
            .bind(rec.seq)
            .bind(rec.at)
            .bind(rec.actor.clone())
            .bind(rec.action.clone())
            .bind(rec.subject.clone())
            .bind(rec.before.to_string())
            .bind(rec.after.to_string())
            .bind(rec.channel.clone())
            .bind(rec.request_id.clone())
            .bind(plugin)
            .bind(rec.prev_hash.clone())
            .bind(rec.hash.clone());
    }
    q.execute(tx.conn()).await?;
    Ok(())
}

/// The records `events` become when appended after `(seq, hash)`.
fn chain_records(
    events: &[Event],
    ctx: &WriteCtx,
    mut seq: i64,
    hash: &str,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut prev = hash.to_owned();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let mut rec = AuditRecord {
            seq,
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
            channel: e.channel.as_str().to_owned(),
            request_id: ctx.request_id.clone(),
            plugin: e.plugin.clone(),
            prev_hash: prev,
            hash: String::new(),
        };
        rec.hash = chain_hash(&rec.prev_hash, &rec.canonical());
        prev = rec.hash.clone();
        out.push(rec);
    }
    Ok(out)
}

/// A write transaction. The audit head it moved is cached once it commits.
pub(super) struct Tx {
    tx: Transaction<'static, Any>,
    head: Arc<std::sync::Mutex<Option<(i64, String)>>>,
    moved_head: Option<(i64, String)>,
}

impl Tx {
    pub(super) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        if let Some(h) = self.moved_head {
            *self.head.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        }
        Ok(())
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl SqlStore {
    /// Connect and migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, pool, writer) = if url.starts_with("sqlite:") {
            let url = sqlite::normalise_url(url)?;
            let writer = sqlite::pool_options(1).connect(&url).await?;
            sqlite::MIGRATOR.run(&writer).await?;
            let pool = sqlite::pool_options(max_connections.min(4))
                .connect(&url)
                .await?;
            (Backend::Sqlite, pool, writer)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = postgres::pool_options(max_connections).connect(url).await?;
            postgres::MIGRATOR.run(&pool).await?;
            (Backend::Postgres, pool.clone(), pool)
        } else {
            return Err(StoreError::Db(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL `{}`: use sqlite://PATH or postgres://...",
                    url.split('@').next_back().unwrap_or(url)
                )
                .into(),
            )));
        };
        Ok(SqlStore {
            pool,
            backend,
            writer,
            head: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Close the pool.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    pub(super) async fn begin_write(&self) -> Result<Tx, StoreError> {
        let begin = match self.backend {
            Backend::Sqlite => sqlite::BEGIN_WRITE,
            Backend::Postgres => postgres::BEGIN_WRITE,
        };
        Ok(Tx {
            tx: self.writer.begin_with(begin).await?,
            head: self.head.clone(),
            moved_head: None,
        })
    }

    fn lock_for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => sqlite::LOCK_FOR_UPDATE,
            Backend::Postgres => postgres::LOCK_FOR_UPDATE,
        }
    }

    /// How a claim query skips rows another replica is claiming (SQLite has one writer).
    pub(super) fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => postgres::SKIP_LOCKED,
        }
    }

    /// Append events to the chain inside `tx`.
    ///
    /// The head is cached (as of this process's last committed append). SQLite: a trigger moves
    /// the head with every insert, and a stale cache shows as a primary-key conflict on `seq`.
    /// PostgreSQL: the head moves with `UPDATE ... WHERE seq = cached`, which fails when another
    /// replica moved it first. Either way the head is then read (under a row lock on
    /// PostgreSQL) and the append redone.
    async fn append_in(
        &self,
        tx: &mut Tx,
        events: &[Event],
        ctx: &WriteCtx,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let cached = self.head.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((seq, hash)) = cached {
            let recs = chain_records(events, ctx, seq, &hash)?;
            let last = recs.last().map(|r| (r.seq, r.hash.clone()));
            let appended = match self.backend {
                Backend::Sqlite => match insert_events(tx, &recs).await {
                    Ok(()) => true,
                    Err(StoreError::Db(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                        false
                    }
                    Err(e) => return Err(e),
                },
                Backend::Postgres => {
                    let (new_seq, new_hash) = last.clone().unwrap_or((seq, hash.clone()));
                    let moved = sqlx::query(
                        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4",
                    )
                    .bind(new_seq)
                    .bind(&new_hash)
                    .bind(seq)
                    .bind(&hash)
                    .execute(tx.conn())
                    .await?
                    .rows_affected();
                    if moved == 1 {
                        insert_events(tx, &recs).await?;
                    }
                    moved == 1
                }
            };
            if appended {
                tx.moved_head = last;
                return Ok(());
            }
        }
        let head = sqlx::query(&format!(
            "SELECT seq, hash FROM audit_head WHERE id = 1{}",
            self.lock_for_update()
        ))
        .fetch_one(tx.conn())
        .await?;
        let seq: i64 = head.try_get("seq")?;
        let hash: String = head.try_get("hash")?;
        let recs = chain_records(events, ctx, seq, &hash)?;
        let last = recs.last().map(|r| (r.seq, r.hash.clone()));
        if self.backend == Backend::Postgres
            && let Some((s, h)) = &last
        {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(*s)
                .bind(h)
                .execute(tx.conn())
                .await?;
        }
        insert_events(tx, &recs).await?;
        tx.moved_head = last;
        Ok(())
    }

    async fn enqueue_in(
        &self,
        tx: &mut Tx,
        jobs: &[JobSpec],
        now: Millis,
    ) -> Result<(), StoreError> {
        // One row per (kind, request): PostgreSQL refuses to upsert the same row twice in one
        // statement, and the latest wish wins anyway.
        let mut unique: Vec<&JobSpec> = Vec::with_capacity(jobs.len());
        for j in jobs {
            match unique
                .iter_mut()
                .find(|u| u.kind == j.kind && u.request_id == j.request_id)
            {
                Some(u) => *u = j,
                None => unique.push(j),
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        let mut sql = String::from(
            "INSERT INTO jobs (kind, request_id, run_at, attempts, generation, created_at) VALUES ",
        );
        for i in 0..unique.len() {
            let b = i * 4;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, 0, 0, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ));
        }
        sql.push_str(
            " ON CONFLICT (kind, request_id) DO UPDATE SET run_at = excluded.run_at, attempts = 0, \
             last_error = NULL, generation = jobs.generation + 1",
        );
        let mut q = sqlx::query(&sql);
        for j in unique {
            q = q
                .bind(j.kind.as_str())
                .bind(j.request_id.clone())
                .bind(j.run_at)
                .bind(now);
        }
        q.execute(tx.conn()).await?;
        Ok(())
    }

    /// Delete a finished job if no newer generation replaced it; otherwise release it so the
    /// newer generation runs.
    async fn finish_job_in(&self, tx: &mut Tx, job: &Job) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM jobs WHERE id = $1 AND generation = $2")
            .bind(job.id)
            .bind(job.generation)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if deleted == 0 {
            sqlx::query("UPDATE jobs SET locked_by = NULL, locked_until = NULL WHERE id = $1")
                .bind(job.id)
                .execute(tx.conn())
                .await?;
        }
        Ok(())
    }
}

/// The columns a request row carries besides its JSON body.
struct RequestColumns {
    expires_at: Option<Millis>,
    revoke_pending: i64,
    body: String,
}

fn columns(r: &Request) -> Result<RequestColumns, StoreError> {
    Ok(RequestColumns {
        expires_at: r.grant.as_ref().map(|g| g.expires_at),
        revoke_pending: i64::from(r.revocation.as_ref().is_some_and(|v| v.done_at.is_none())),
        body: serde_json::to_string(r).map_err(|e| corrupt("request", e))?,
    })
}

fn request_from(row: &AnyRow) -> Result<Request, StoreError> {
    let body: String = row.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| corrupt("request body", e))
}

fn job_from(row: &AnyRow) -> Result<Job, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: JobKind::parse(&kind).ok_or_else(|| corrupt("job kind", &kind))?,
        request_id: row.try_get("request_id")?,
        run_at: row.try_get("run_at")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        generation: row.try_get("generation")?,
    })
}

fn audit_from(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let json = |col: &str| -> Result<Value, StoreError> {
        let s: String = row.try_get(col)?;
        serde_json::from_str(&s).map_err(|e| corrupt(col, e))
    };
    let plugin: Option<String> = row.try_get("plugin")?;
    let plugin: Option<PluginRef> = match plugin {
        Some(p) => Some(serde_json::from_str(&p).map_err(|e| corrupt("plugin", e))?),
        None => None,
    };
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        subject: row.try_get("subject")?,
        before: json("before")?,
        after: json("after")?,
        channel: row.try_get("channel")?,
        request_id: row.try_get("request_id")?,
        plugin,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn token_from(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    let principal: String = row.try_get("principal")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        principal: serde_json::from_str(&principal).map_err(|e| corrupt("principal", e))?,
        name: row.try_get("name")?,
        scope: match row.try_get::<String, _>("scope")?.as_str() {
            "web" => TokenScope::Web,
            "action" => TokenScope::Action,
            _ => TokenScope::Api,
        },
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A `WHERE` clause built from optional conditions, with `$N` placeholders in order.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Where {
    fn next(&self) -> usize {
        self.args.len() + 1
    }

    fn text(&mut self, clause: impl FnOnce(usize) -> String, v: String) {
        let c = clause(self.next());
        self.clauses.push(c);
        self.args.push(Arg::Text(v));
    }

    fn int(&mut self, clause: impl FnOnce(usize) -> String, v: i64) {
        let c = clause(self.next());
        self.clauses.push(c);
        self.args.push(Arg::Int(v));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_request(&self, t: &Transition, ctx: &WriteCtx) -> Result<(), StoreError> {
        let mut r = t.request.clone();
        r.version = 1;
        let c = columns(&r)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO requests (id, entitlement, requester, state, created_at, updated_at, expires_at, revoke_pending, version, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.id)
        .bind(&r.entitlement)
        .bind(&r.requester.id)
        .bind(r.state.as_str())
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(c.expires_at)
        .bind(c.revoke_pending)
        .bind(r.version)
        .bind(&c.body)
        .execute(tx.conn())
        .await?;
        self.enqueue_in(&mut tx, &t.jobs, r.updated_at).await?;
        // Last: on PostgreSQL the audit head's row lock serialises writers until COMMIT.
        self.append_in(&mut tx, &t.events, ctx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn commit(
        &self,
        t: &Transition,
        ctx: &WriteCtx,
        done: Option<&Job>,
    ) -> Result<(), StoreError> {
        let expected = t.request.version;
        let mut r = t.request.clone();
        r.version = expected + 1;
        let c = columns(&r)?;
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE requests SET state = $1, updated_at = $2, expires_at = $3, revoke_pending = $4, version = $5, body = $6 \
             WHERE id = $7 AND version = $8",
        )
        .bind(r.state.as_str())
        .bind(r.updated_at)
        .bind(c.expires_at)
        .bind(c.revoke_pending)
        .bind(r.version)
        .bind(&c.body)
        .bind(&r.id)
        .bind(expected)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Err(StoreError::Conflict);
        }
        self.enqueue_in(&mut tx, &t.jobs, r.updated_at).await?;
        if let Some(job) = done {
            self.finish_job_in(&mut tx, job).await?;
        }
        // Last: on PostgreSQL the audit head's row lock serialises writers until COMMIT.
        self.append_in(&mut tx, &t.events, ctx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let row = sqlx::query("SELECT body FROM requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(request_from).transpose()
    }

    async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let mut w = Where::default();
        if !f.states.is_empty() {
            let start = w.next();
            let marks: Vec<String> = (0..f.states.len())
                .map(|i| format!("${}", start + i))
                .collect();
            w.clauses.push(format!("state IN ({})", marks.join(", ")));
            for s in &f.states {
                w.args.push(Arg::Text(s.as_str().to_owned()));
            }
        }
        if let Some(u) = &f.requester {
            w.text(|n| format!("requester = ${n}"), u.clone());
        }
        if let Some(e) = &f.entitlement {
            w.text(|n| format!("entitlement = ${n}"), e.clone());
        }
        if let Some(b) = &f.before {
            w.text(|n| format!("id < ${n}"), b.clone());
        }
        let limit = i64::from(f.limit.clamp(1, 500));
        let sql = format!(
            "SELECT body FROM requests{} ORDER BY id DESC LIMIT {limit}",
            w.sql()
        );
        let rows = w.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(request_from).collect()
    }

    async fn append_events(&self, events: &[Event], ctx: &WriteCtx) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        self.append_in(&mut tx, events, ctx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut w = Where::default();
        if let Some(s) = f.since {
            w.int(|n| format!("at >= ${n}"), s);
        }
        if let Some(u) = f.until {
            w.int(|n| format!("at < ${n}"), u);
        }
        if let Some(s) = &f.subject {
            w.text(|n| format!("subject = ${n}"), s.clone());
        }
        if let Some(a) = &f.actor {
            w.text(|n| format!("actor = ${n}"), a.clone());
        }
        if let Some(a) = &f.action {
            if a.ends_with('.') {
                let len = a.chars().count();
                w.text(|n| format!("substr(action, 1, {len}) = ${n}"), a.clone());
            } else {
                w.text(|n| format!("action = ${n}"), a.clone());
            }
        }
        if let Some(e) = &f.entitlement {
            w.text(
                |n| format!("subject IN (SELECT id FROM requests WHERE entitlement = ${n})"),
                e.clone(),
            );
        }
        if let Some(s) = f.after_seq {
            w.int(|n| format!("seq > ${n}"), s);
        }
        let limit = i64::from(f.limit.clamp(1, 10_000));
        let order = if f.newest_first { "seq DESC" } else { "seq" };
        let sql = format!(
            "SELECT * FROM audit_events{} ORDER BY {order} LIMIT {limit}",
            w.sql()
        );
        let rows = w.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(audit_from).collect()
    }

    async fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        // One snapshot for the head and every event, so concurrent appends cannot confuse it.
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let mut tx = self.pool.begin_with(begin).await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (head_seq, head_hash): (i64, String) = match head {
            Some(h) => (h.try_get("seq")?, h.try_get("hash")?),
            None => (-1, "<the head row is missing>".into()),
        };
        let mut v = Verifier::default();
        let mut after = i64::MIN;
        'pages: loop {
            let rows =
                sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT 2000")
                    .bind(after)
                    .fetch_all(&mut *tx)
                    .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let rec = audit_from(row)?;
                after = rec.seq;
                if !v.feed(&rec) {
                    break 'pages;
                }
            }
        }
        tx.rollback().await?;
        Ok(v.finish(head_seq, &head_hash))
    }

    async fn claim_jobs(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let skip = self.skip_locked();
        let sql = format!(
            "UPDATE jobs SET locked_by = $1, locked_until = $2 WHERE id IN (\
               SELECT id FROM jobs WHERE run_at <= $3 AND (locked_until IS NULL OR locked_until < $3) \
               ORDER BY run_at, id LIMIT $4{skip}) \
             RETURNING id, kind, request_id, run_at, attempts, generation"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(worker)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(i64::from(limit.max(1)))
            .fetch_all(tx.conn())
            .await?;
        tx.commit().await?;
        let mut jobs: Vec<Job> = rows.iter().map(job_from).collect::<Result<_, _>>()?;
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    }

    async fn extend_lease(
        &self,
        worker: &str,
        ids: &[i64],
        until: Millis,
    ) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query("UPDATE jobs SET locked_until = $1 WHERE id = $2 AND locked_by = $3")
                .bind(until)
                .bind(*id)
                .bind(worker)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn complete_job(&self, job: &Job) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        self.finish_job_in(&mut tx, job).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retry_job(&self, job: &Job, run_at: Millis, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE jobs SET run_at = $1, attempts = attempts + 1, last_error = $2, locked_by = NULL, locked_until = NULL \
             WHERE id = $3 AND generation = $4",
        )
        .bind(run_at)
        .bind(error)
        .bind(job.id)
        .bind(job.generation)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if n == 0 {
            // Re-enqueued meanwhile: release it so the newer generation runs as scheduled.
            sqlx::query("UPDATE jobs SET locked_by = NULL, locked_until = NULL WHERE id = $1")
                .bind(job.id)
                .execute(tx.conn())
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN locked_until IS NOT NULL AND locked_until > run_at THEN locked_until ELSE run_at END) AS due FROM jobs",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    async fn insert_token(&self, t: &TokenRecord, hash: &str) -> Result<(), StoreError> {
        let principal = serde_json::to_string(&t.principal).map_err(|e| corrupt("principal", e))?;
        sqlx::query(
            "INSERT INTO api_tokens (id, hash, user_id, principal, name, created_at, expires_at, scope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(hash)
        .bind(&t.user_id)
        .bind(principal)
        .bind(&t.name)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.scope.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn put_one_time(
        &self,
        hash: &str,
        purpose: &str,
        data: &serde_json::Value,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM one_time WHERE expires_at <= $1")
            .bind(crate::service::now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO one_time (hash, purpose, data, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(purpose)
        .bind(data.to_string())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn note_attestation_key(
        &self,
        kid: &str,
        jwk: &serde_json::Value,
        not_after: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attestation_keys (kid, jwk, not_after) VALUES ($1, $2, $3) \
             ON CONFLICT (kid) DO UPDATE SET not_after = CASE \
             WHEN excluded.not_after > attestation_keys.not_after THEN excluded.not_after \
             ELSE attestation_keys.not_after END",
        )
        .bind(kid)
        .bind(jwk.to_string())
        .bind(not_after)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn attestation_keys(
        &self,
        now: Millis,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let rows =
            sqlx::query("SELECT kid, jwk FROM attestation_keys WHERE not_after > $1 ORDER BY kid")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|r| {
                let kid: String = r.try_get("kid")?;
                let jwk: String = r.try_get("jwk")?;
                let jwk =
                    serde_json::from_str(&jwk).map_err(|e| corrupt("attestation_keys.jwk", e))?;
                Ok((kid, jwk))
            })
            .collect()
    }

    async fn take_one_time(
        &self,
        hash: &str,
        purpose: &str,
        now: Millis,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        // One statement: of two concurrent takers, exactly one gets the row.
        let row = sqlx::query(
            "DELETE FROM one_time WHERE hash = $1 AND purpose = $2 AND expires_at > $3 RETURNING data",
        )
        .bind(hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|r| {
            let d: String = r.try_get("data")?;
            serde_json::from_str(&d).map_err(|e| corrupt("one_time.data", e))
        })
        .transpose()
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from).transpose()
    }

    async fn touch_token(&self, id: &str, now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoke_token(
        &self,
        id: &str,
        user: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = match user {
            Some(u) => {
                sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .bind(u)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(n.rows_affected() > 0)
    }

    async fn list_tokens(&self, user: &str, limit: u32) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(user)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from).collect()
    }

    async fn prune_tokens(&self, before: Millis) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "DELETE FROM api_tokens WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)",
        )
        .bind(before)
        .execute(&self.writer)
        .await?;
        Ok(n.rows_affected())
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let mut c = Counts::default();
        for row in sqlx::query("SELECT state, COUNT(*) AS n FROM requests GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            let s: String = row.try_get("state")?;
            if let Some(state) = State::parse(&s) {
                c.requests.push((state, row.try_get("n")?));
            }
        }
        for row in sqlx::query("SELECT kind, COUNT(*) AS n FROM jobs GROUP BY kind")
            .fetch_all(&self.pool)
            .await?
        {
            let k: String = row.try_get("kind")?;
            if let Some(kind) = JobKind::parse(&k) {
                c.jobs.push((kind, row.try_get("n")?));
            }
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM requests WHERE revoke_pending = 1")
            .fetch_one(&self.pool)
            .await?;
        c.revocations_pending = row.try_get("n")?;
        let row = sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        c.audit_events = row.try_get("seq")?;
        Ok(c)
    }
}
