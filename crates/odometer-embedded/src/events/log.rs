//! The events log: where an append becomes durable before it is acknowledged. Each group
//! commit is one record, written at the end of the current segment file and flushed with
//! `fdatasync` before any event of it is answered; the columnarizer then copies records into
//! DuckDB in the background, and segments whose records DuckDB holds are deleted.
//!
//! A record on disk is `[len: u32][crc32: u32][lsn: u64][payload]` (little-endian), the CRC
//! over the LSN and the payload. LSNs (log sequence numbers) count records from 1, without
//! gaps, across segments; a segment is named after its first LSN (`00000000000000000001.seg`).
//!
//! Recovery reads every segment in order. Each record is flushed before the next is written,
//! so only the last record can be torn by a crash (and it was never acknowledged): the first
//! record of the last segment that does not read back ends the log there, as a database's
//! write-ahead log ends at its first invalid record. The bytes cut off are kept beside the
//! segment (`.torn`) for inspection. A bad record in an earlier segment, or a gap in the LSNs,
//! is damage the log cannot explain, and opening fails rather than guessing.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A segment is closed and a new one started once it holds this many bytes.
const SEGMENT_LIMIT: u64 = 64 << 20;

const HEADER: usize = 16;

/// A record read back at recovery.
#[derive(Debug)]
pub(super) struct Recovered {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Log {
    /// `None` for a store in memory: records are numbered, nothing is written.
    dir: Option<PathBuf>,
    file: Option<File>,
    /// Bytes in the current segment.
    size: u64,
    /// Every segment (first LSN, path), oldest first; the last is the current one.
    segments: Vec<(u64, PathBuf)>,
    next_lsn: u64,
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.seg"))
}

fn damaged(path: &Path, offset: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the events log is damaged: {} at byte {offset}: {what}", path.display()),
    )
}

/// Makes a directory entry durable (a new segment's name, a deletion).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Log {
    /// Opens the log in `dir` (created when missing) and reads back every record after
    /// `columnarized` (the LSN through which DuckDB holds the records), cutting off a torn
    /// last record. The next record gets the LSN after the last one found, or after
    /// `columnarized` when that is larger (the log is empty once DuckDB holds everything).
    pub fn open(dir: &Path, columnarized: u64) -> io::Result<(Log, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segments.push((first, path));
            }
        }
        segments.sort();
        let mut recovered = Vec::new();
        let mut expected: Option<u64> = None;
        let count = segments.len();
        let mut last_size = 0u64;
        for (index, (first, path)) in segments.iter().enumerate() {
            let is_last = index + 1 == count;
            let mut bytes = Vec::new();
            File::open(path)?.read_to_end(&mut bytes)?;
            if let Some(expected) = expected {
                if *first != expected {
                    return Err(damaged(
                        path,
                        0,
                        &format!("starts at LSN {first}, not {expected}"),
                    ));
                }
            }
            let mut offset = 0usize;
            let mut next = *first;
            while offset < bytes.len() {
                match frame_at(&bytes, offset) {
                    Some((lsn, payload, end)) if lsn == next => {
                        if lsn > columnarized {
                            recovered.push(Recovered { lsn, payload: payload.to_vec() });
                        }
                        next += 1;
                        offset = end;
                    }
                    Some((lsn, ..)) => {
                        return Err(damaged(path, offset, &format!("LSN {lsn}, expected {next}")));
                    }
                    None if is_last => {
                        // A torn last record: it was never acknowledged.
                        tracing::warn!(
                            path = %path.display(),
                            offset,
                            bytes = bytes.len() - offset,
                            "cutting off a torn record at the end of the events log"
                        );
                        std::fs::write(path.with_extension("seg.torn"), &bytes[offset..])?;
                        let file = OpenOptions::new().write(true).open(path)?;
                        file.set_len(offset as u64)?;
                        file.sync_all()?;
                        break;
                    }
                    None => return Err(damaged(path, offset, "unreadable record")),
                }
            }
            expected = Some(next);
            if is_last {
                last_size = offset as u64;
            }
        }
        let next_lsn = expected.unwrap_or(1).max(columnarized + 1);
        let (file, size) = match segments.last() {
            // Appending to the last segment only when it continues exactly where the log is.
            Some((_, path)) if expected == Some(next_lsn) => {
                (OpenOptions::new().append(true).open(path)?, last_size)
            }
            _ => {
                let path = segment_path(dir, next_lsn);
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                sync_dir(dir)?;
                segments.push((next_lsn, path));
                (file, 0)
            }
        };
        let mut log = Log { dir: Some(dir.to_owned()), file: Some(file), size, segments, next_lsn };
        log.release_through(columnarized)?;
        Ok((log, recovered))
    }

    /// A log that keeps nothing, for a store in memory (which loses everything at close
    /// anyway).
    pub fn in_memory() -> Log {
        Log { dir: None, file: None, size: 0, segments: Vec::new(), next_lsn: 1 }
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Writes one record and flushes it to disk; answers its LSN. An error leaves the log in
    /// an unknown state: the caller must stop appending (the next start recovers).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        if self.file.is_none() {
            self.next_lsn += 1;
            return Ok(self.next_lsn - 1);
        }
        if self.size >= SEGMENT_LIMIT {
            self.rotate()?;
        }
        let lsn = self.next_lsn;
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "log record too large"))?;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc(lsn, payload).to_le_bytes());
        frame.extend_from_slice(&lsn.to_le_bytes());
        frame.extend_from_slice(payload);
        let Some(file) = self.file.as_mut() else { return Ok(lsn) };
        file.write_all(&frame)?;
        file.sync_data()?;
        self.size += frame.len() as u64;
        self.next_lsn += 1;
        Ok(lsn)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = segment_path(dir, self.next_lsn);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(dir)?;
        self.segments.push((self.next_lsn, path));
        self.file = Some(file);
        self.size = 0;
        Ok(())
    }

    /// Deletes the segments whose records all have LSNs at or below `lsn` (DuckDB holds
    /// them). The current segment is kept.
    pub fn release_through(&mut self, lsn: u64) -> io::Result<()> {
        let mut deleted = false;
        while self.segments.len() > 1 && self.segments[1].0 <= lsn + 1 {
            let (_, path) = self.segments.remove(0);
            std::fs::remove_file(&path)?;
            deleted = true;
        }
        if let (true, Some(dir)) = (deleted, &self.dir) {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// How many segment files there are.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.segments.len()
    }
}

fn crc(lsn: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The record starting at `offset`: its LSN, payload and where the next one starts; `None`
/// when it is incomplete or its checksum does not match.
fn frame_at(bytes: &[u8], offset: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(offset..offset + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let checksum = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let lsn = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let end = offset.checked_add(HEADER)?.checked_add(len)?;
    let payload = bytes.get(offset + HEADER..end)?;
    (crc(lsn, payload) == checksum).then_some((lsn, payload, end))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn payloads(recovered: &[Recovered]) -> Vec<(u64, Vec<u8>)> {
        recovered.iter().map(|r| (r.lsn, r.payload.clone())).collect()
    }

    #[test]
    fn records_come_back_in_order_after_the_columnarized_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = Log::open(dir.path(), 0).unwrap();
        assert!(recovered.is_empty());
        for i in 1..=5u8 {
            assert_eq!(log.append(&[i; 3]).unwrap(), u64::from(i));
        }
        drop(log);
        let (log, recovered) = Log::open(dir.path(), 2).unwrap();
        assert_eq!(payloads(&recovered), vec![(3, vec![3; 3]), (4, vec![4; 3]), (5, vec![5; 3])]);
        assert_eq!(log.next_lsn(), 6);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 0).unwrap();
        log.append(b"first").unwrap();
        log.append(b"second").unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let full = std::fs::metadata(&path).unwrap().len();
        // Every cut inside the second record loses it, and only it.
        for cut in [full - 1, full - 6, full - 10] {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..cut as usize]).unwrap();
            let (mut log, recovered) = Log::open(dir.path(), 0).unwrap();
            assert_eq!(payloads(&recovered), vec![(1, b"first".to_vec())], "cut at {cut}");
            assert_eq!(log.append(b"second").unwrap(), 2);
        }
    }

    #[test]
    fn damage_in_an_earlier_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 0).unwrap();
        log.append(b"first").unwrap();
        log.rotate().unwrap();
        log.append(b"second").unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = Log::open(dir.path(), 0).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn the_last_segment_ends_at_its_first_bad_record_and_keeps_the_rest_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 0).unwrap();
        log.append(b"first").unwrap();
        log.append(b"second").unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER + b"first".len();
        bytes[second + HEADER] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovered) = Log::open(dir.path(), 0).unwrap();
        assert_eq!(payloads(&recovered), vec![(1, b"first".to_vec())]);
        let torn = std::fs::read(path.with_extension("seg.torn")).unwrap();
        assert_eq!(torn, &bytes[second..]);
    }

    #[test]
    fn released_segments_are_deleted_and_lsns_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 0).unwrap();
        log.append(b"a").unwrap();
        log.rotate().unwrap();
        log.append(b"b").unwrap();
        log.rotate().unwrap();
        assert_eq!(log.segments(), 3);
        log.release_through(1).unwrap();
        assert_eq!(log.segments(), 2);
        log.release_through(2).unwrap();
        assert_eq!(log.segments(), 1);
        drop(log);
        // Everything columnarized: the log is empty and goes on after LSN 2.
        let (mut log, recovered) = Log::open(dir.path(), 2).unwrap();
        assert!(recovered.is_empty());
        assert_eq!(log.append(b"c").unwrap(), 3);
        drop(log);
        // DuckDB ahead of an emptied log (its segments deleted): LSNs continue after DuckDB's.
        let (log, _) = Log::open(dir.path(), 10).unwrap();
        assert_eq!(log.next_lsn(), 11);
    }
}
