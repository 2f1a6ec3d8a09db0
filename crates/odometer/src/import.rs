//! `odometer events import`: reads events from an NDJSON or CSV file, sends them in batches to
//! `POST /v1/events` of a running server, and reports every event's outcome by line number.
//!
//! A reader thread parses the input into chunks (one request's worth of events, plus the lines
//! that could not be read as events) while the previous chunk is being sent, so reading and the
//! server's work overlap. Chunks are sent one at a time, in file order, so that which of two
//! events with the same transaction id comes first is the file's order.

mod input;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::cli::{ImportArgs, ImportFormat};
use crate::remote::{CallError, EventResult, Exit, IngestAnswer, Rejection, Remote};
use input::{Chunk, Item, Limits};

/// Exit status when some events were rejected (the rest were sent).
pub const EXIT_REJECTED: u8 = 1;
/// Exit status when the import stopped before the end of the input.
pub const EXIT_STOPPED: u8 = 3;
/// Rejections printed when they are not written to a file.
const SHOWN_REJECTIONS: usize = 10;
/// Chunks read ahead of the one being sent.
const READ_AHEAD: usize = 2;

/// One rejected event, as written to `--rejects` (one JSON object per line).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RejectedEvent {
    pub line: u64,
    pub transaction_id: Option<String>,
    pub error: Rejection,
}

/// What happened to the events so far.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    by_code: BTreeMap<String, u64>,
    /// The first rejections, to print when they are not written to a file.
    shown: Vec<RejectedEvent>,
}

impl Tally {
    fn reject(&mut self, event: &RejectedEvent) {
        self.rejected += 1;
        *self.by_code.entry(event.error.code.clone()).or_default() += 1;
        if self.shown.len() < SHOWN_REJECTIONS {
            self.shown.push(event.clone());
        }
    }
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let remote = Remote::new(&args.remote)?;
    let format = resolve_format(&args.file, args.format)?;
    // Hidden until the server has answered, so that a failed check draws nothing.
    let progress = ProgressBar::hidden();
    let (source, total_bytes) = input::open(&args.file, format, &progress)?;
    let mut rejects = match &args.rejects {
        Some(path) => Some(RejectsFile::create(path)?),
        None => None,
    };
    remote.check().await.map_err(|err| Exit {
        status: EXIT_STOPPED,
        message: format!("{err:#}\nnothing was sent"),
    })?;

    show_progress(&progress, total_bytes);
    let limits = Limits { batch_size: args.batch_size as usize };
    let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    let reader_progress = progress.clone();
    let reader_thread =
        std::thread::spawn(move || input::read(source, limits, &reader_progress, &tx));

    let started = Instant::now();
    let mut tally = Tally::default();
    let url =
        remote.url("v1/events", if args.atomic_batches { &[("atomic", "true")] } else { &[] })?;
    let mut stopped: Option<anyhow::Error> = None;
    while let Some(chunk) = rx.recv().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                stopped = Some(err);
                break;
            }
        };
        if let Err(err) =
            send_chunk(&remote, &url, chunk, &progress, &mut tally, &mut rejects).await
        {
            stopped = Some(err);
            break;
        }
    }
    // Not joined: after a failure it may be blocked reading standard input, and it ends by
    // itself (its next send fails) or with the process.
    drop(rx);
    drop(reader_thread);
    progress.finish_and_clear();
    if let Some(rejects) = rejects.as_mut() {
        rejects.flush()?;
    }

    print_summary(&args.file, &tally, started.elapsed(), args.rejects.as_deref());
    if let Some(err) = stopped {
        return Err(Exit { status: EXIT_STOPPED, message: format!("{err:#}") }.into());
    }
    if tally.rejected > 0 {
        return Err(Exit {
            status: EXIT_REJECTED,
            message: format!("{} of {} events were rejected", tally.rejected, tally.read),
        }
        .into());
    }
    Ok(())
}

/// The format given, or the one the file's extension names.
fn resolve_format(file: &Path, given: Option<ImportFormat>) -> anyhow::Result<ImportFormat> {
    if let Some(format) = given {
        return Ok(format);
    }
    if file == Path::new("-") {
        return Err(
            Exit::usage("reading standard input needs --format ndjson or --format csv").into()
        );
    }
    let extension =
        file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    match extension.as_str() {
        "ndjson" | "jsonl" | "json" => Ok(ImportFormat::Ndjson),
        "csv" => Ok(ImportFormat::Csv),
        _ => Err(Exit::usage(format!(
            "cannot tell the format of {} from its extension (.ndjson, .jsonl, .json or .csv); \
             pass --format ndjson or --format csv",
            file.display()
        ))
        .into()),
    }
}

/// A bar of bytes read when the size is known, else a spinner; drawn on standard error, and
/// not at all when that is not a terminal (a log file should not fill with redraws).
fn show_progress(bar: &ProgressBar, total_bytes: Option<u64>) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let template = match total_bytes {
        Some(_) => "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} (eta {eta})",
        None => "{spinner} [{elapsed_precise}] {binary_bytes} read",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    if let Some(total) = total_bytes {
        bar.set_length(total);
    }
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.enable_steady_tick(Duration::from_millis(200));
}

/// Sends one chunk's events (retrying as [`Remote::call`] does) and records every line's
/// outcome, in input order.
async fn send_chunk(
    remote: &Remote,
    url: &reqwest::Url,
    chunk: Chunk,
    progress: &ProgressBar,
    tally: &mut Tally,
    rejects: &mut Option<RejectsFile>,
) -> anyhow::Result<()> {
    let sent: Vec<&Item> = chunk.items.iter().filter(|item| item.rejection.is_none()).collect();
    let mut results = match sent.first() {
        Some(first) => send(remote, url, &sent, first.line, progress).await?.into_iter(),
        None => Vec::new().into_iter(),
    };
    for item in &chunk.items {
        tally.read += 1;
        let error = match &item.rejection {
            Some(rejection) => rejection.clone(),
            None => {
                // `send` checked that there is one result per sent item.
                let Some(result) = results.next() else { break };
                match result.status.as_str() {
                    "accepted" => {
                        tally.accepted += 1;
                        continue;
                    }
                    "duplicate" => {
                        tally.duplicates += 1;
                        continue;
                    }
                    other => result.error.unwrap_or_else(|| Rejection {
                        code: "rejected".to_owned(),
                        message: format!("the server answered status '{other}'"),
                    }),
                }
            }
        };
        let rejected =
            RejectedEvent { line: item.line, transaction_id: item.transaction_id.clone(), error };
        tally.reject(&rejected);
        if let Some(file) = rejects.as_mut() {
            file.write(&rejected)?;
        }
    }
    Ok(())
}

/// One `POST /v1/events` of the sent items; each item's result, in order. A failure names
/// `first_line`, the first line whose event is not known to be stored.
async fn send(
    remote: &Remote,
    url: &reqwest::Url,
    sent: &[&Item],
    first_line: u64,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<EventResult>> {
    let on_retry = |err: &CallError, wait: Duration| {
        let why = err.to_string();
        let why = why.lines().next().unwrap_or_default();
        progress.suspend(|| {
            eprintln!(
                "warning: the batch from line {first_line} failed ({why}); retrying in {:.1} s",
                wait.as_secs_f64()
            );
        });
    };
    // A 422 with per-event results is an answer: some events were rejected.
    let answer = remote
        .call(
            Method::POST,
            url,
            Some(&batch_body(sent)),
            &[StatusCode::UNPROCESSABLE_ENTITY],
            on_retry,
        )
        .await
        .map_err(|err| stopped_at(first_line, &err.to_string()))?;
    let answer: IngestAnswer = serde_json::from_value(answer)
        .map_err(|e| stopped_at(first_line, &format!("unexpected answer: {e}")))?;
    if answer.results.len() != sent.len() {
        let why = format!(
            "the server answered {} results for {} events",
            answer.results.len(),
            sent.len()
        );
        return Err(stopped_at(first_line, &why));
    }
    Ok(answer.results)
}

/// `{"events": [...]}` from the events' JSON texts, as they were read.
fn batch_body(items: &[&Item]) -> Vec<u8> {
    let size: usize = items.iter().map(|item| item.json.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item.json.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

/// The error that ends an import: which line is the first one not known to be stored, and that
/// running the import again is safe.
fn stopped_at(line: u64, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the import stopped at line {line}: {why}\n\
         lines before {line} were sent and answered; line {line} and later ones may not be \
         stored. Running the same import again is safe: events already stored are answered as \
         duplicates"
    )
}

fn print_summary(file: &Path, tally: &Tally, elapsed: Duration, rejects: Option<&Path>) {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { tally.read as f64 / seconds } else { 0.0 };
    let name = if file == Path::new("-") {
        "standard input".to_owned()
    } else {
        file.display().to_string()
    };
    // Rejection codes are listed under `rejected`, indented, with every count in one column.
    let width = tally.by_code.keys().map(|code| code.len() + 2).max().unwrap_or(0).max(12);
    println!("{name}:");
    println!("  {:<width$} {:>10}", "events read", tally.read);
    println!("  {:<width$} {:>10}", "accepted", tally.accepted);
    println!("  {:<width$} {:>10}", "duplicates", tally.duplicates);
    println!("  {:<width$} {:>10}", "rejected", tally.rejected);
    for (code, count) in &tally.by_code {
        println!("    {code:<code_width$} {count:>10}", code_width = width - 2);
    }
    println!("  {:<width$} {seconds:>10.2} s ({rate:.0} events/s)", "elapsed");
    if tally.rejected == 0 {
        return;
    }
    if let Some(path) = rejects {
        println!("{} rejected events written to {}", tally.rejected, path.display());
        return;
    }
    let shown = tally.shown.len() as u64;
    if shown < tally.rejected {
        println!(
            "the first {shown} of {} rejected events (--rejects FILE writes them all):",
            tally.rejected
        );
    } else {
        println!("rejected events:");
    }
    for event in &tally.shown {
        let id = event.transaction_id.as_deref().map(|t| format!(" ({t})")).unwrap_or_default();
        println!("  line {}{id}: {}: {}", event.line, event.error.code, event.error.message);
    }
}

/// `--rejects FILE`: created before anything is sent, so a bad path fails before any work.
#[derive(Debug)]
struct RejectsFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RejectsFile {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).map_err(|e| {
            Exit::usage(format!("cannot create the rejects file {}: {e}", path.display()))
        })?;
        Ok(Self { path: path.to_owned(), out: BufWriter::new(file) })
    }

    fn write(&mut self, event: &RejectedEvent) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("cannot write to {}", self.path.display()))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("cannot write to {}", self.path.display()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_flag_or_the_extension() {
        let cases = [
            ("events.ndjson", None, Some(ImportFormat::Ndjson)),
            ("events.JSONL", None, Some(ImportFormat::Ndjson)),
            ("events.json", None, Some(ImportFormat::Ndjson)),
            ("dir.v2/events.csv", None, Some(ImportFormat::Csv)),
            ("events.txt", Some(ImportFormat::Csv), Some(ImportFormat::Csv)),
            ("-", Some(ImportFormat::Ndjson), Some(ImportFormat::Ndjson)),
            ("events.txt", None, None),
            ("events", None, None),
            ("-", None, None),
        ];
        for (file, given, expected) in cases {
            match (resolve_format(Path::new(file), given), expected) {
                (Ok(format), Some(expected)) => assert_eq!(format, expected, "{file}"),
                (Err(err), None) => assert_eq!(crate::remote::exit_status(&err), 2, "{file}"),
                (got, expected) => panic!("{file}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_batch_body_holds_the_events_as_read() {
        let items = [
            Item { line: 1, transaction_id: None, json: "{\"a\":1}".into(), rejection: None },
            Item { line: 3, transaction_id: None, json: "{\"b\": 2.50}".into(), rejection: None },
        ];
        let refs: Vec<&Item> = items.iter().collect();
        let body = String::from_utf8(batch_body(&refs)).unwrap();
        assert_eq!(body, "{\"events\":[{\"a\":1},{\"b\": 2.50}]}");
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["events"][1]["b"].to_string(), "2.50");
    }
}
