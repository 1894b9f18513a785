//! The notification tables: people seen, the delivery outbox, approval links, the dev outbox.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::{SqlStore, corrupt};
use super::{
    ApprovalLink, Delivery, DeliveryState, NewDelivery, NotifyStore, OutboxMessage, StoreError,
};
use crate::domain::{Millis, Principal};

fn delivery_from(row: &AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        topic: row.try_get("topic")?,
        channel: row.try_get("channel")?,
        target: row.try_get("target")?,
        event_seq: row.try_get("event_seq")?,
        run_at: row.try_get("run_at")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        last_error: row.try_get("last_error")?,
        state: row.try_get("state")?,
    })
}

fn link_from(row: &AnyRow) -> Result<ApprovalLink, StoreError> {
    let principal: String = row.try_get("principal")?;
    Ok(ApprovalLink {
        hash: row.try_get("hash")?,
        request_id: row.try_get("request_id")?,
        reviewer: row.try_get("reviewer")?,
        principal: serde_json::from_str(&principal)
            .map_err(|e| corrupt("approval_links.principal", e))?,
        action: row.try_get("action")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
    })
}

fn principal_from(row: &AnyRow) -> Result<Principal, StoreError> {
    let s: String = row.try_get("principal")?;
    serde_json::from_str(&s).map_err(|e| corrupt("people.principal", e))
}

fn outbox_from(r: &AnyRow) -> Result<OutboxMessage, StoreError> {
    Ok(OutboxMessage {
        id: r.try_get("id")?,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        text_body: r.try_get("text_body")?,
        html_body: r.try_get("html_body")?,
        request_id: r.try_get("request_id")?,
        created_at: r.try_get("created_at")?,
    })
}

const DELIVERY_COLUMNS: &str =
    "id, request_id, topic, channel, target, event_seq, run_at, attempts, last_error, state";

#[async_trait]
impl NotifyStore for SqlStore {
    async fn remember_person(&self, p: &Principal, now: Millis) -> Result<(), StoreError> {
        let principal = serde_json::to_string(p).map_err(|e| corrupt("principal", e))?;
        sqlx::query(
            "INSERT INTO people (id, principal, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET principal = excluded.principal, seen_at = excluded.seen_at",
        )
        .bind(&p.id)
        .bind(principal)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn people(&self) -> Result<Vec<Principal>, StoreError> {
        let rows = sqlx::query("SELECT principal FROM people ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(principal_from).collect()
    }

    async fn find_person(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query("SELECT principal FROM people WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| principal_from(&r)).transpose()
    }

    async fn notify_cursor(&self, cursor: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT seq FROM notify_cursor WHERE request_id = $1")
            .bind(cursor)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("seq")).transpose()?.unwrap_or(0))
    }

    async fn add_deliveries(
        &self,
        cursor: &str,
        seq: i64,
        deliveries: &[NewDelivery],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for d in deliveries {
            sqlx::query(
                "INSERT INTO deliveries (key, request_id, topic, channel, target, event_seq, run_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&d.key)
            .bind(&d.request_id)
            .bind(&d.topic)
            .bind(&d.channel)
            .bind(&d.target)
            .bind(d.event_seq)
            .bind(d.run_at)
            .bind(now)
            .execute(tx.conn())
            .await?;
        }
        sqlx::query(
            "INSERT INTO notify_cursor (request_id, seq) VALUES ($1, $2) \
             ON CONFLICT (request_id) DO UPDATE SET seq = excluded.seq \
             WHERE notify_cursor.seq < excluded.seq",
        )
        .bind(cursor)
        .bind(seq)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let skip = self.skip_locked();
        let sql = format!(
            "UPDATE deliveries SET locked_by = $1, locked_until = $2 WHERE id IN (\
               SELECT id FROM deliveries WHERE state = 'queued' AND run_at <= $3 \
               AND (locked_until IS NULL OR locked_until < $3) ORDER BY run_at, id LIMIT $4{skip}) \
             RETURNING {DELIVERY_COLUMNS}"
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
        let mut out: Vec<Delivery> = rows.iter().map(delivery_from).collect::<Result<_, _>>()?;
        out.sort_by_key(|d| (d.run_at, d.id));
        Ok(out)
    }

    async fn finish_delivery(
        &self,
        id: i64,
        worker: &str,
        state: DeliveryState,
        note: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET state = $1, done_at = $2, last_error = COALESCE($3, last_error), \
             locked_by = NULL, locked_until = NULL WHERE id = $4 AND locked_by = $5",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(note)
        .bind(id)
        .bind(worker)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn retry_delivery(
        &self,
        id: i64,
        worker: &str,
        run_at: Millis,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET run_at = $1, attempts = attempts + 1, last_error = $2, \
             locked_by = NULL, locked_until = NULL WHERE id = $3 AND state = 'queued' AND locked_by = $4",
        )
        .bind(run_at)
        .bind(error)
        .bind(id)
        .bind(worker)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn next_delivery_due(&self) -> Result<Option<Millis>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN locked_until IS NOT NULL AND locked_until > run_at THEN locked_until ELSE run_at END) AS due \
             FROM deliveries WHERE state = 'queued'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    async fn deliveries_for(&self, request_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE request_id = $1 ORDER BY id"
        ))
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from).collect()
    }

    async fn insert_links(&self, links: &[ApprovalLink]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for l in links {
            let principal =
                serde_json::to_string(&l.principal).map_err(|e| corrupt("principal", e))?;
            sqlx::query(
                "INSERT INTO approval_links (hash, request_id, reviewer, principal, action, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&l.hash)
            .bind(&l.request_id)
            .bind(&l.reviewer)
            .bind(principal)
            .bind(&l.action)
            .bind(l.created_at)
            .bind(l.expires_at)
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_links(&self, hashes: &[String]) -> Result<(), StoreError> {
        for h in hashes {
            sqlx::query("DELETE FROM approval_links WHERE hash = $1 AND used_at IS NULL")
                .bind(h)
                .execute(&self.writer)
                .await?;
        }
        Ok(())
    }

    async fn find_link(&self, hash: &str) -> Result<Option<ApprovalLink>, StoreError> {
        let row = sqlx::query("SELECT * FROM approval_links WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(link_from).transpose()
    }

    async fn use_link(&self, hash: &str, now: Millis) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE approval_links SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING request_id, reviewer",
        )
        .bind(now)
        .bind(hash)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(false);
        };
        let request_id: String = row.try_get("request_id")?;
        let reviewer: String = row.try_get("reviewer")?;
        sqlx::query(
            "UPDATE approval_links SET used_at = $1 WHERE request_id = $2 AND reviewer = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(request_id)
        .bind(reviewer)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn put_outbox(&self, m: &OutboxMessage) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO outbox (recipient, subject, text_body, html_body, request_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&m.recipient)
        .bind(&m.subject)
        .bind(&m.text_body)
        .bind(&m.html_body)
        .bind(&m.request_id)
        .bind(m.created_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit.clamp(1, 500)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_from).collect()
    }

    async fn outbox_message(&self, id: i64) -> Result<Option<OutboxMessage>, StoreError> {
        let row = sqlx::query("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(outbox_from).transpose()
    }
}
