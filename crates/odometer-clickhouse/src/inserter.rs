//! Group commit into ClickHouse: the rows of appends that arrive while an insert is running
//! go together in the next one, so a busy replica makes a few large inserts (ClickHouse
//! writes one part per insert, and many small parts make it slow down and refuse inserts)
//! and an idle one inserts at once.

use odometer_store::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::http::ClickHouse;
use crate::rows::INSERT_COLUMNS;

/// Rows of one insert at most (well under the million that make one part).
const MAX_ROWS: usize = 200_000;

struct Request {
    rows: String,
    count: usize,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The sending side; the task ends when it is dropped.
#[derive(Debug, Clone)]
pub struct Inserter {
    queue: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("count", &self.count).finish_non_exhaustive()
    }
}

impl Inserter {
    pub fn start(ch: ClickHouse) -> Self {
        let (queue, mut receiver) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut count = first.count;
                let mut batch = vec![first];
                while count < MAX_ROWS {
                    match receiver.try_recv() {
                        Ok(next) => {
                            count += next.count;
                            batch.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let mut rows = String::with_capacity(batch.iter().map(|r| r.rows.len()).sum());
                for request in &batch {
                    rows.push_str(&request.rows);
                }
                let started = std::time::Instant::now();
                let result = ch.insert_tsv("events", INSERT_COLUMNS, rows).await;
                if result.is_ok() {
                    // The embedded store's families, for the insert that makes events durable
                    // and readable here (the ledger's commit came before it).
                    metrics::histogram!("odometer_append_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("odometer_append_batch_events").record(count as f64);
                    metrics::histogram!("odometer_append_requests_merged")
                        .record(batch.len() as f64);
                }
                for request in batch {
                    let _ = request.reply.send(result.clone());
                }
            }
        });
        Self { queue }
    }

    /// Inserts `rows` (`TabSeparated` text of [`INSERT_COLUMNS`]); returns once ClickHouse
    /// holds them.
    pub async fn insert(&self, rows: String) -> Result<(), StoreError> {
        let count = rows.matches('\n').count();
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { rows, count, reply })
            .map_err(|_| StoreError::Backend("the clickhouse inserter stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the clickhouse inserter dropped an insert".into()))?
    }
}
