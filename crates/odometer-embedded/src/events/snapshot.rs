//! The store's snapshot (`events.snapshot`): what a clean shutdown leaves so the next start
//! needs no full read of the events: each organization's next sequence, the exactly-once
//! index and every complete usage state, as of one LSN.
//!
//! It is written at close, once DuckDB holds every record, to a temporary file that is
//! flushed and renamed into place; it ends with a CRC of everything before. At open it is used
//! only if it belongs to this database (its store id) and is exactly as new as the log (its
//! LSN is the last one); either way it is then deleted, so a later crash can never bring back
//! a stale one. Without it the indexes are rebuilt from the stored events.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use odometer_core::usage_index::DefinitionState;
use odometer_core::OrganizationId;

use super::exactly_once::ExactlyOnce;

const MAGIC: &[u8; 8] = b"ODOSNAP2";

/// What a snapshot holds.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub store_id: String,
    pub lsn: u64,
    pub next_sequence: HashMap<OrganizationId, u64>,
    pub exactly_once: ExactlyOnce,
    /// (organization, the sequence the state has seen through, the state).
    pub states: Vec<(OrganizationId, u64, DefinitionState)>,
}

/// A writer that keeps a CRC of what passed through.
struct Crc<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn org_bytes(org: OrganizationId) -> [u8; 16] {
    org.as_uuid().as_u128().to_le_bytes()
}

fn org_of(bytes: [u8; 16]) -> OrganizationId {
    OrganizationId::from_uuid(uuid::Uuid::from_u128(u128::from_le_bytes(bytes)))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {what}"))
}

/// Writes the snapshot to `path` (through a temporary file, flushed, then renamed).
pub(super) fn write(
    path: &Path,
    store_id: &str,
    lsn: u64,
    next_sequence: &HashMap<OrganizationId, u64>,
    exactly_once: &ExactlyOnce,
    states: &[(OrganizationId, u64, &DefinitionState)],
) -> io::Result<()> {
    let temporary = path.with_extension("snapshot.tmp");
    let file = File::create(&temporary)?;
    let mut out =
        Crc { inner: BufWriter::with_capacity(1 << 20, file), hasher: Default::default() };
    out.write_all(MAGIC)?;
    out.write_all(&(store_id.len() as u64).to_le_bytes())?;
    out.write_all(store_id.as_bytes())?;
    out.write_all(&lsn.to_le_bytes())?;
    out.write_all(&(next_sequence.len() as u64).to_le_bytes())?;
    for (org, next) in next_sequence {
        out.write_all(&org_bytes(*org))?;
        out.write_all(&next.to_le_bytes())?;
    }
    exactly_once.write_to(&mut out)?;
    out.write_all(&(states.len() as u64).to_le_bytes())?;
    let mut bytes = Vec::new();
    for (org, through, state) in states {
        bytes.clear();
        state.write_snapshot(&mut bytes);
        out.write_all(&org_bytes(*org))?;
        out.write_all(&through.to_le_bytes())?;
        out.write_all(&(bytes.len() as u64).to_le_bytes())?;
        out.write_all(&bytes)?;
    }
    let crc = out.hasher.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    input.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn read_len(input: &mut impl Read, limit: u64) -> io::Result<usize> {
    let n = read_u64(input)?;
    if n > limit {
        return Err(invalid("a length past the file's size"));
    }
    usize::try_from(n).map_err(|_| invalid("a length past memory"))
}

/// Reads the snapshot at `path`; `Ok(None)` when there is none.
pub(super) fn read(path: &Path) -> io::Result<Option<Snapshot>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let size = file.metadata()?.len();
    let mut input =
        Crc { inner: BufReader::with_capacity(1 << 20, file), hasher: Default::default() };
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a snapshot of this version"));
    }
    let id_len = read_len(&mut input, 1024)?;
    let mut id = vec![0u8; id_len];
    input.read_exact(&mut id)?;
    let store_id = String::from_utf8(id).map_err(|_| invalid("store id"))?;
    let lsn = read_u64(&mut input)?;
    let orgs = read_len(&mut input, size)?;
    let mut next_sequence = HashMap::with_capacity(orgs);
    for _ in 0..orgs {
        let mut org = [0u8; 16];
        input.read_exact(&mut org)?;
        next_sequence.insert(org_of(org), read_u64(&mut input)?);
    }
    let exactly_once = ExactlyOnce::read_from(&mut input)?;
    let count = read_len(&mut input, size)?;
    let mut states = Vec::with_capacity(count);
    for _ in 0..count {
        let mut org = [0u8; 16];
        input.read_exact(&mut org)?;
        let through = read_u64(&mut input)?;
        let len = read_len(&mut input, size)?;
        let mut bytes = vec![0u8; len];
        input.read_exact(&mut bytes)?;
        let (state, rest) =
            DefinitionState::read_snapshot(&bytes).map_err(|e| invalid(&e.to_string()))?;
        if !rest.is_empty() {
            return Err(invalid("bytes after a state"));
        }
        states.push((org_of(org), through, state));
    }
    let expected = input.hasher.clone().finalize();
    let mut crc = [0u8; 4];
    input.inner.read_exact(&mut crc)?;
    if u32::from_le_bytes(crc) != expected {
        return Err(invalid("checksum mismatch"));
    }
    Ok(Some(Snapshot { store_id, lsn, next_sequence, exactly_once, states }))
}
