//! Reading an import's input: NDJSON lines or CSV rows become event JSON texts with their line
//! numbers, grouped into chunks of one request each. A line that cannot be read as an event is
//! kept as a rejection, in place, so the import goes on and reports it by line.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use indicatif::ProgressBar;
use serde_json::{Map, Value};
use tokio::sync::mpsc::Sender;

use crate::cli::ImportFormat;
use crate::remote::{Exit, Rejection};

/// The largest request body the server takes for events (10 MiB), less room for the envelope.
const BODY_BUDGET: usize = 10 * 1024 * 1024 - 1024;
/// Columns of a CSV file that are the event's own members; every other one is a property.
const EVENT_COLUMNS: [&str; 4] = ["transaction_id", "code", "customer", "timestamp"];
/// Columns a CSV file must have: without them every row would be rejected.
const REQUIRED_COLUMNS: [&str; 3] = ["transaction_id", "code", "customer"];
/// The CSV column holding a JSON object of further properties.
const PROPERTIES_COLUMN: &str = "properties";

/// One line (NDJSON) or row (CSV) of the input.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where it starts in the input, from 1.
    pub line: u64,
    pub transaction_id: Option<String>,
    /// The event as JSON text (empty when rejected).
    pub json: String,
    /// Set when the line could not be read as an event; it is then not sent.
    pub rejection: Option<Rejection>,
}

impl Item {
    fn rejected(line: u64, code: &str, message: String) -> Self {
        Item {
            line,
            transaction_id: None,
            json: String::new(),
            rejection: Some(Rejection { code: code.to_owned(), message }),
        }
    }
}

/// One request's worth of events, with the rejected lines among them, in input order.
#[derive(Debug, Default)]
pub struct Chunk {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events per request.
    pub batch_size: usize,
}

/// An opened input, ready to read from the first event.
pub enum Source {
    Ndjson(Box<dyn BufRead + Send>),
    // Boxed: the CSV reader carries its buffers inline.
    Csv { reader: Box<csv::Reader<LfLines>>, columns: Vec<String> },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ndjson(_) => f.write_str("Source::Ndjson"),
            Source::Csv { columns, .. } => write!(f, "Source::Csv({columns:?})"),
        }
    }
}

/// Opens the file (or standard input for `-`) and, for CSV, reads and checks the header. Its
/// size, when known, is the progress bar's total; `progress` counts the bytes read. Problems
/// here are usage errors.
pub fn open(
    path: &Path,
    format: ImportFormat,
    progress: &ProgressBar,
) -> anyhow::Result<(Source, Option<u64>)> {
    let (reader, size): (Box<dyn BufRead + Send>, Option<u64>) = if path == Path::new("-") {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let file = File::open(path)
            .map_err(|e| Exit::usage(format!("cannot open {}: {e}", path.display())))?;
        let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(BufReader::with_capacity(1 << 16, file)), size)
    };
    let source = match format {
        ImportFormat::Ndjson => Source::Ndjson(reader),
        ImportFormat::Csv => {
            let mut reader = csv_reader(LfLines::new(reader, progress.clone()));
            let header = reader.headers().map_err(|e| {
                Exit::usage(format!("cannot read the CSV header of {}: {e}", path.display()))
            })?;
            let columns = check_columns(header)
                .map_err(|why| Exit::usage(format!("{}: {why}", path.display())))?;
            Source::Csv { reader: Box::new(reader), columns }
        }
    };
    Ok((source, size))
}

/// A CSV reader over lines that all end in "\n", which alone ends a record (so a stray "\r" is
/// data, trimmed like other whitespace). Cells are trimmed by [`csv_item`], after the newlines
/// inside them are counted for line numbers.
fn csv_reader(input: LfLines) -> csv::Reader<LfLines> {
    csv::ReaderBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(false)
        .from_reader(input)
}

/// The input with every line ending in "\n": "\r\n" becomes "\n" and a last line without an
/// end gets one. The CSV reader then consumes a record's own line end with the record, so
/// where a record starts can be told from where it ends (see [`read_csv`]), blank lines
/// between records included. Counts the bytes it reads on the progress bar.
pub struct LfLines {
    inner: Box<dyn BufRead + Send>,
    line: Vec<u8>,
    at: usize,
    progress: ProgressBar,
}

impl LfLines {
    fn new(inner: Box<dyn BufRead + Send>, progress: ProgressBar) -> Self {
        Self { inner, line: Vec::new(), at: 0, progress }
    }
}

impl Read for LfLines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.line.len() {
            self.line.clear();
            self.at = 0;
            let read = self.inner.read_until(b'\n', &mut self.line)?;
            if read == 0 {
                return Ok(0);
            }
            self.progress.inc(read as u64);
            if self.line.ends_with(b"\r\n") {
                self.line.truncate(self.line.len() - 2);
            } else if self.line.ends_with(b"\n") {
                self.line.truncate(self.line.len() - 1);
            }
            self.line.push(b'\n');
        }
        let n = out.len().min(self.line.len() - self.at);
        out[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The header's column names, if they make events: named, distinct, with the required ones.
fn check_columns(header: &csv::StringRecord) -> Result<Vec<String>, String> {
    let columns: Vec<String> =
        header.iter().map(|name| name.trim_start_matches('\u{feff}').trim().to_owned()).collect();
    if columns.iter().all(String::is_empty) {
        return Err("the CSV file has no header row".to_owned());
    }
    let mut seen = HashSet::new();
    for (i, name) in columns.iter().enumerate() {
        if name.is_empty() {
            return Err(format!("column {} of the header has no name", i + 1));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("the header names the column '{name}' twice"));
        }
    }
    let missing: Vec<&str> = REQUIRED_COLUMNS.into_iter().filter(|c| !seen.contains(c)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "the CSV header lacks the column{} {} (it has: {})",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            columns.join(", ")
        ));
    }
    Ok(columns)
}

/// Groups items into chunks and hands each full one to the sender.
struct Chunker<'a> {
    limits: Limits,
    chunk: Chunk,
    events: usize,
    bytes: usize,
    tx: &'a Sender<anyhow::Result<Chunk>>,
}

impl Chunker<'_> {
    /// Adds an item; false when the receiving side is gone (the import stopped).
    fn push(&mut self, mut item: Item) -> bool {
        if item.rejection.is_none() && item.json.len() > BODY_BUDGET {
            item = Item {
                rejection: Some(Rejection {
                    code: "payload_too_large".to_owned(),
                    message: format!(
                        "line {}: the event is {} bytes; a request holds at most {BODY_BUDGET}",
                        item.line,
                        item.json.len()
                    ),
                }),
                json: String::new(),
                ..item
            };
        }
        if item.rejection.is_none() {
            let full = self.events == self.limits.batch_size
                || self.bytes + item.json.len() + 1 > BODY_BUDGET;
            if full && !self.flush() {
                return false;
            }
            self.events += 1;
            self.bytes += item.json.len() + 1;
        }
        self.chunk.items.push(item);
        // Rejected lines count too, so a file of garbage still moves along in bounded memory.
        if self.chunk.items.len() >= self.limits.batch_size.saturating_mul(4).max(1000) {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        self.events = 0;
        self.bytes = 0;
        if self.chunk.items.is_empty() {
            return true;
        }
        self.tx.blocking_send(Ok(std::mem::take(&mut self.chunk))).is_ok()
    }
}

/// Reads the whole input into chunks sent on `tx`; an error that stops reading (the disk, not
/// a malformed line) is sent as the last message. Runs on its own thread: it blocks.
pub fn read(
    source: Source,
    limits: Limits,
    progress: &ProgressBar,
    tx: &Sender<anyhow::Result<Chunk>>,
) {
    let mut chunker = Chunker { limits, chunk: Chunk::default(), events: 0, bytes: 0, tx };
    let result = match source {
        Source::Ndjson(reader) => read_ndjson(reader, progress, &mut chunker),
        Source::Csv { reader, columns } => read_csv(*reader, &columns, &mut chunker),
    };
    match result {
        Ok(true) => {
            chunker.flush();
        }
        // The import stopped: nobody is listening any more.
        Ok(false) => {}
        Err(err) => {
            // What was read before the error is still worth sending.
            if chunker.flush() {
                let _ = tx.blocking_send(Err(err));
            }
        }
    }
}

/// Returns false when the import stopped before the end.
fn read_ndjson(
    mut reader: Box<dyn BufRead + Send>,
    progress: &ProgressBar,
    chunker: &mut Chunker<'_>,
) -> anyhow::Result<bool> {
    let mut buffer = Vec::new();
    let mut line = 0u64;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .with_context(|| format!("cannot read the input after line {line}"))?;
        if read == 0 {
            return Ok(true);
        }
        line += 1;
        progress.inc(read as u64);
        if let Some(item) = ndjson_item(line, &buffer) {
            if !chunker.push(item) {
                return Ok(false);
            }
        }
    }
}

/// One NDJSON line as an item; `None` for a blank line.
fn ndjson_item(line: u64, bytes: &[u8]) -> Option<Item> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(Item::rejected(line, "malformed_json", format!("line {line} is not UTF-8")));
    };
    // A byte order mark may open the file; JSON allows whitespace (and so "\r") around a value.
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Some(Item {
            line,
            transaction_id: value.get("transaction_id").and_then(Value::as_str).map(str::to_owned),
            json: text.to_owned(),
            rejection: None,
        }),
        Err(e) => Some(Item::rejected(
            line,
            "malformed_json",
            format!("line {line} is not valid JSON: {e}"),
        )),
    }
}

/// Returns false when the import stopped before the end.
fn read_csv(
    mut reader: csv::Reader<LfLines>,
    columns: &[String],
    chunker: &mut Chunker<'_>,
) -> anyhow::Result<bool> {
    let mut record = csv::ByteRecord::new();
    loop {
        let outcome = reader.read_byte_record(&mut record);
        // The reader's own record positions point before any blank lines it skipped, so the
        // start is worked out from the end: the record's own "\n" and those inside its quoted
        // cells were the last lines read (every line ends in "\n", see `LfLines`).
        let inner_newlines: usize =
            record.iter().map(|cell| cell.iter().filter(|b| **b == b'\n').count()).sum();
        let line = reader.position().line().saturating_sub(inner_newlines as u64 + 1).max(1);
        let item = match outcome {
            Ok(false) => return Ok(true),
            Ok(true) if is_blank(&record) => continue,
            Ok(true) => csv_item(line, columns, &record),
            // A line of spaces is one empty cell, not the header's count: a blank line.
            Err(err) => match err.kind() {
                csv::ErrorKind::UnequalLengths { .. } if is_blank(&record) => continue,
                csv::ErrorKind::UnequalLengths { len, expected_len, .. } => malformed_row(
                    line,
                    columns,
                    &record,
                    format!("line {line} has {len} fields, the header has {expected_len}"),
                ),
                _ => return Err(anyhow::Error::new(err).context("cannot read the CSV input")),
            },
        };
        if !chunker.push(item) {
            return Ok(false);
        }
    }
}

fn is_blank(record: &csv::ByteRecord) -> bool {
    record.len() == 1 && record.iter().all(|cell| cell.trim_ascii().is_empty())
}

/// The row's transaction id, when it has a readable one: rejections name it too.
fn csv_transaction_id(columns: &[String], record: &csv::ByteRecord) -> Option<String> {
    let at = columns.iter().position(|c| c == "transaction_id")?;
    let cell = std::str::from_utf8(record.get(at)?).ok()?.trim();
    (!cell.is_empty()).then(|| cell.to_owned())
}

/// A CSV row that is not an event.
fn malformed_row(line: u64, columns: &[String], record: &csv::ByteRecord, message: String) -> Item {
    Item {
        transaction_id: csv_transaction_id(columns, record),
        ..Item::rejected(line, "malformed_csv", message)
    }
}

/// One CSV row as an event: the event columns by name, every other non-empty cell a string
/// property, and the `properties` column's JSON object merged over those.
fn csv_item(line: u64, columns: &[String], record: &csv::ByteRecord) -> Item {
    let mut event = Map::new();
    let mut properties = Map::new();
    let mut extra = None;
    for (name, cell) in columns.iter().zip(record.iter()) {
        let Ok(cell) = std::str::from_utf8(cell) else {
            let message = format!("line {line}: the {name} column is not UTF-8");
            return malformed_row(line, columns, record, message);
        };
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        if EVENT_COLUMNS.contains(&name.as_str()) {
            event.insert(name.clone(), Value::String(cell.to_owned()));
        } else if name == PROPERTIES_COLUMN {
            let message = match serde_json::from_str::<Value>(cell) {
                Ok(Value::Object(map)) => {
                    extra = Some(map);
                    continue;
                }
                Ok(_) => format!("line {line}: the properties column is not a JSON object"),
                Err(e) => format!("line {line}: the properties column is not valid JSON: {e}"),
            };
            return malformed_row(line, columns, record, message);
        } else {
            properties.insert(name.clone(), Value::String(cell.to_owned()));
        }
    }
    // The JSON column is typed and explicit, so it wins over a same-named text column.
    properties.extend(extra.unwrap_or_default());
    if !properties.is_empty() {
        event.insert("properties".to_owned(), Value::Object(properties));
    }
    let transaction_id = event.get("transaction_id").and_then(Value::as_str).map(str::to_owned);
    let event = Value::Object(event);
    Item { line, transaction_id, json: event.to_string(), rejection: None }
}

/// Reads a whole (small) input, for tests.
#[cfg(test)]
fn read_all(source: Source, batch_size: usize) -> Vec<anyhow::Result<Chunk>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1_000);
    read(source, Limits { batch_size }, &ProgressBar::hidden(), &tx);
    drop(tx);
    let mut out = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        out.push(chunk);
    }
    out
}

#[cfg(test)]
fn csv_source(text: &'static str) -> Result<Source, String> {
    let mut reader = csv_reader(LfLines::new(Box::new(text.as_bytes()), ProgressBar::hidden()));
    let header = reader.headers().map_err(|e| e.to_string())?.clone();
    let columns = check_columns(&header)?;
    Ok(Source::Csv { reader: Box::new(reader), columns })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn summary(chunks: Vec<anyhow::Result<Chunk>>) -> Vec<Vec<(u64, String)>> {
        chunks
            .into_iter()
            .map(|chunk| {
                chunk
                    .unwrap()
                    .items
                    .into_iter()
                    .map(|item| match item.rejection {
                        Some(r) => (item.line, format!("!{}", r.code)),
                        None => (item.line, item.json),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn ndjson_lines_are_numbered_and_bad_ones_kept_in_place() {
        let text: &'static [u8] = b"\xef\xbb\xbf{\"transaction_id\": \"a\"}\r\n\n  \n{not json\n[1]\n\xff\n{\"transaction_id\": \"b\"}";
        let source = Source::Ndjson(Box::new(text));
        let chunks = summary(read_all(source, 2));
        assert_eq!(
            chunks,
            vec![
                vec![
                    (1, "{\"transaction_id\": \"a\"}".to_owned()),
                    (4, "!malformed_json".to_owned()),
                    (5, "[1]".to_owned()),
                    // A rejected line joins the open chunk; the next event would overfill it.
                    (6, "!malformed_json".to_owned()),
                ],
                vec![(7, "{\"transaction_id\": \"b\"}".to_owned())],
            ]
        );
    }

    #[test]
    fn invalid_utf8_in_ndjson_is_a_rejected_line() {
        let bytes: &'static [u8] = b"{\"a\": 1}\n\xff\xfe\n";
        let source = Source::Ndjson(Box::new(bytes));
        let chunks = summary(read_all(source, 10));
        assert_eq!(
            chunks,
            vec![vec![(1, "{\"a\": 1}".to_owned()), (2, "!malformed_json".to_owned())]]
        );
    }

    #[test]
    fn csv_rows_become_events_with_string_properties() {
        let text = "transaction_id, code ,customer,timestamp,region,bytes,properties\n\
                    t1,storage,acme,2026-01-05T10:00:00Z,eu,5,\n\
                    t2,storage,acme,,,7,\"{\"\"bytes\"\": 8, \"\"tags\"\": [\"\"x\"\"]}\"\n\
                    t3,storage,acme\n\
                    \n\
                    t4,storage,acme,,,,[1]\n\
                    t5,storage,acme,,,,{oops\n\
                    \"t6\nwith a newline\",storage,acme,,us,1,\n";
        let chunks = summary(read_all(csv_source(text).unwrap(), 100));
        assert_eq!(
            chunks,
            vec![vec![
                (
                    2,
                    r#"{"transaction_id":"t1","code":"storage","customer":"acme","timestamp":"2026-01-05T10:00:00Z","properties":{"region":"eu","bytes":"5"}}"#
                        .to_owned()
                ),
                (
                    3,
                    r#"{"transaction_id":"t2","code":"storage","customer":"acme","properties":{"bytes":8,"tags":["x"]}}"#
                        .to_owned()
                ),
                (4, "!malformed_csv".to_owned()),
                (6, "!malformed_csv".to_owned()),
                (7, "!malformed_csv".to_owned()),
                (
                    8,
                    r#"{"transaction_id":"t6\nwith a newline","code":"storage","customer":"acme","properties":{"region":"us","bytes":"1"}}"#
                        .to_owned()
                ),
            ]]
        );
    }

    #[test]
    fn csv_line_numbers_survive_crlf_blank_lines_and_a_missing_last_newline() {
        let text = "transaction_id,code,customer\r\n\r\nt1,c,a\r\n   \r\n\"t2\r\nx\",c,a\r\nt3,c\r\n\nt4,c,a";
        let lines: Vec<(u64, String)> = read_all(csv_source(text).unwrap(), 100)
            .into_iter()
            .flat_map(|chunk| chunk.unwrap().items)
            .map(|item| (item.line, item.transaction_id.unwrap_or_else(|| "-".to_owned())))
            .collect();
        let expected = [(3, "t1"), (5, "t2\nx"), (7, "t3"), (9, "t4")];
        let expected: Vec<(u64, String)> =
            expected.into_iter().map(|(line, id)| (line, id.to_owned())).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn csv_headers_must_name_the_event_columns_once() {
        for (text, expected) in [
            ("code,customer\n", "lacks the column transaction_id"),
            ("a,b\n", "lacks the columns transaction_id, code, customer"),
            ("transaction_id,code,customer,code\n", "names the column 'code' twice"),
            ("transaction_id,,code,customer\n", "column 2 of the header has no name"),
        ] {
            let err = csv_source(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert!(csv_source("\u{feff}transaction_id,code,customer\n").is_ok());
    }

    #[test]
    fn batches_respect_the_event_count() {
        let text: String = (1..=5).map(|i| format!("{{\"transaction_id\": \"t{i}\"}}\n")).collect();
        let text: &'static str = Box::leak(text.into_boxed_str());
        let chunks = summary(read_all(Source::Ndjson(Box::new(text.as_bytes())), 2));
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }
}
