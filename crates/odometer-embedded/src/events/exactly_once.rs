//! The exactly-once index: every stored event's identity fingerprint, with its content hash
//! and sequence, in memory. Appends classify each event against it (new, duplicate, conflict)
//! under the writer lock; an identity enters it only once its record is durable in the log.
//!
//! Fingerprints are keyed hash output, uniformly distributed, so the map uses their low bits as
//! the hash directly. The index is rebuilt from the stored rows after a crash, or read back
//! from the snapshot a clean shutdown wrote.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};

/// Hashes a fingerprint by its low 64 bits (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u128; fold them in (FNV-1a) to stay correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

pub(super) type FingerprintMap<V> = HashMap<u128, V, BuildHasherDefault<FingerprintHasher>>;

/// What the index keeps per stored identity.
///
/// The content hash is only ever compared between events with the same identity (is a
/// re-sent event a duplicate or a conflict?), so its low 64 bits are kept: two different
/// contents of one key collide with probability 2^-64, where the fingerprint itself, compared
/// across all identities, needs all 128 bits. That makes an entry 32 bytes with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub content: u64,
    /// The event's sequence within its organization.
    pub sequence: u64,
}

impl Entry {
    pub fn new(content: u128, sequence: u64) -> Self {
        Self { content: content as u64, sequence }
    }

    /// Whether `content` (a full content hash) is this entry's.
    pub fn same_content(&self, content: u128) -> bool {
        self.content == content as u64
    }
}

/// Bytes of one entry in a snapshot: fingerprint, content, sequence.
const ENTRY_BYTES: usize = 16 + 8 + 8;

#[derive(Debug, Default)]
pub(super) struct ExactlyOnce {
    map: FingerprintMap<Entry>,
}

impl ExactlyOnce {
    pub fn with_capacity(n: usize) -> Self {
        Self { map: FingerprintMap::with_capacity_and_hasher(n, Default::default()) }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, fingerprint: u128) -> Option<Entry> {
        self.map.get(&fingerprint).copied()
    }

    pub fn insert(&mut self, fingerprint: u128, entry: Entry) {
        self.map.insert(fingerprint, entry);
    }

    /// Makes room for `n` more entries at once, so a large batch does not grow the table in
    /// steps.
    pub fn reserve(&mut self, n: usize) {
        self.map.reserve(n);
    }

    /// Writes the snapshot form: the count, then fixed-width entries.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&(self.map.len() as u64).to_le_bytes())?;
        let mut buffer = Vec::with_capacity(ENTRY_BYTES * 1024);
        for (fingerprint, entry) in &self.map {
            buffer.extend_from_slice(&fingerprint.to_le_bytes());
            buffer.extend_from_slice(&entry.content.to_le_bytes());
            buffer.extend_from_slice(&entry.sequence.to_le_bytes());
            if buffer.len() >= ENTRY_BYTES * 1024 {
                out.write_all(&buffer)?;
                buffer.clear();
            }
        }
        out.write_all(&buffer)
    }

    /// Reads what [`Self::write_to`] wrote.
    pub fn read_from(input: &mut impl Read) -> io::Result<Self> {
        let mut count = [0u8; 8];
        input.read_exact(&mut count)?;
        let count = usize::try_from(u64::from_le_bytes(count))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "index too large"))?;
        let mut index = Self::with_capacity(count);
        let mut buffer = vec![0u8; ENTRY_BYTES * 1024];
        let mut left = count;
        while left > 0 {
            let n = left.min(1024);
            let chunk = &mut buffer[..n * ENTRY_BYTES];
            input.read_exact(chunk)?;
            for entry in chunk.chunks_exact(ENTRY_BYTES) {
                let (fp, rest) = entry.split_at(16);
                let (content, sequence) = rest.split_at(8);
                let fingerprint = u128::from_le_bytes(fp.try_into().unwrap_or_default());
                let content = u64::from_le_bytes(content.try_into().unwrap_or_default());
                let sequence = u64::from_le_bytes(sequence.try_into().unwrap_or_default());
                index.map.insert(fingerprint, Entry { content, sequence });
            }
            left -= n;
        }
        Ok(index)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_the_same_index() {
        let mut index = ExactlyOnce::default();
        for i in 0..1000u128 {
            index.insert(i * 0x9E37_79B9_7F4A_7C15, Entry::new(i ^ 77, i as u64));
        }
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).unwrap();
        bytes.extend_from_slice(b"rest");
        let mut input = &bytes[..];
        let back = ExactlyOnce::read_from(&mut input).unwrap();
        assert_eq!(input, b"rest");
        assert_eq!(back.map, index.map);
        assert!(ExactlyOnce::read_from(&mut &bytes[..bytes.len() - 10]).is_err());
    }
}
