//! Durable desired state: a snapshot file and a journal of the mutations since.
//!
//! - `state.json` holds the whole state at some generation. It is replaced atomically:
//!   written to `state.json.tmp`, fsynced, renamed over, and the directory fsynced.
//! - `journal` holds one record per accepted mutation after that: `length (u32 LE) |
//!   CRC-32 of the payload (u32 LE) | payload (JSON: the mutation and the generation it
//!   produced)`. A mutation is answered only after its record is fsynced. Concurrent
//!   requests share fsyncs (group commit): whoever syncs covers every record written
//!   before it.
//! - Opening replays the journal onto the snapshot, skipping records the snapshot
//!   already has, and stops at the first torn or corrupt record (a crash in the middle
//!   of an append: that mutation was never answered), cutting it off.
//! - When the journal passes [`COMPACT_BYTES`], the state is written as a new snapshot
//!   and the journal truncated. A crash between the two leaves records the snapshot
//!   already has, which replay skips.
//! - `lock` is held with `flock` so that two daemons never share a state directory.
//!
//! Why not a database crate: the state is small (kilobytes per thousand objects) and
//! written one object at a time; this is the whole of what a write-ahead log needs,
//! with no dependency that could itself lose data in ways we do not test.

use crate::state::{Desired, Mutation};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The journal is folded into a new snapshot past this size.
pub const COMPACT_BYTES: u64 = 4 << 20;
/// Snapshot format version.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    state: Desired,
}

/// One journal record.
#[derive(Serialize, Deserialize)]
struct Record {
    generation: u64,
    mutation: Mutation,
}

/// The state directory, open and locked.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    journal: Mutex<Journal>,
    /// Serialises fsyncs; holds the highest sequence number known durable.
    synced: Mutex<u64>,
    sync_fd: File,
    _lock: File,
}

#[derive(Debug)]
struct Journal {
    file: File,
    bytes: u64,
    /// Records appended since open (a sequence number for group commit).
    appended: u64,
}

/// What opening found.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: Store,
    /// The state, unless the directory held none (first start).
    pub state: Option<Desired>,
    /// Journal records replayed.
    pub replayed: usize,
    /// Bytes cut off the journal's end (a torn record from a crash).
    pub truncated: u64,
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (creating if needed) and locks `dir`, and reads the state in it.
    pub fn open(dir: &Path) -> io::Result<Opened> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock"))?;
        if lock.try_lock().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another podswitchd; give each daemon its own state_dir", dir.display()),
            ));
        }
        let mut state = match std::fs::read(dir.join("state.json")) {
            Ok(bytes) => {
                let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{}/state.json: {e}", dir.display()))
                })?;
                if snap.format != FORMAT {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}/state.json: format {} is not {FORMAT}", dir.display(), snap.format),
                    ));
                }
                let mut state = snap.state;
                state.reindex();
                Some(state)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let path = dir.join("journal");
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut at = 0usize;
        let mut replayed = 0;
        while let Some((record, next)) = read_record(&bytes, at) {
            let cur = state.get_or_insert_with(Desired::default);
            if record.generation > cur.generation {
                cur.apply(&record.mutation);
                cur.generation = record.generation;
                replayed += 1;
            }
            at = next;
        }
        let truncated = (bytes.len() - at) as u64;
        if truncated > 0 {
            file.set_len(at as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        let sync_fd = file.try_clone()?;
        let store = Store {
            dir: dir.to_path_buf(),
            journal: Mutex::new(Journal { file, bytes: at as u64, appended: 0 }),
            synced: Mutex::new(0),
            sync_fd,
            _lock: lock,
        };
        Ok(Opened { store, state, replayed, truncated })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `mutation` (which produced `generation`), not yet durable: pass the
    /// returned sequence number to [`sync`](Self::sync) before answering.
    pub fn append(&self, generation: u64, mutation: &Mutation) -> io::Result<u64> {
        let payload = serde_json::to_vec(&Record { generation, mutation: mutation.clone() })?;
        let mut rec = Vec::with_capacity(payload.len() + 8);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = j.file.write_all(&rec) {
            // Cut off whatever part was written, so the next record starts clean.
            let keep = j.bytes;
            let _ = j.file.set_len(keep);
            let _ = j.file.seek(SeekFrom::End(0));
            return Err(e);
        }
        j.bytes += rec.len() as u64;
        j.appended += 1;
        Ok(j.appended)
    }

    /// Returns once record `seq` (and every one before it) is on disk.
    pub fn sync(&self, seq: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        // Everything appended by now is covered by this fsync.
        let upto = self.journal.lock().unwrap_or_else(|e| e.into_inner()).appended;
        self.sync_fd.sync_data()?;
        *synced = upto;
        Ok(())
    }

    /// True when the journal should be folded into a snapshot.
    pub fn should_compact(&self) -> bool {
        self.journal.lock().map(|j| j.bytes >= COMPACT_BYTES).unwrap_or(false)
    }

    /// Writes `state` as the snapshot and empties the journal. `state` must include
    /// every appended record.
    pub fn compact(&self, state: &Desired) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        self.write_snapshot(state)?;
        j.file.set_len(0)?;
        j.file.seek(SeekFrom::Start(0))?;
        j.file.sync_all()?;
        j.bytes = 0;
        *synced = j.appended;
        Ok(())
    }

    /// Writes `state` as the snapshot (first start, seeded from the config file).
    pub fn write_snapshot(&self, state: &Desired) -> io::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let mut f = File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, &Snapshot { format: FORMAT, state: state.clone() })?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("state.json"))?;
        fsync_dir(&self.dir)
    }
}

/// The record at `at` and where the next starts, or None at the end or at a torn or
/// corrupt record.
fn read_record(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    let payload = bytes.get(at + 8..at + 8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let record = serde_json::from_slice(payload).ok()?;
    Some((record, at + 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetworkConfig;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("podswitch-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn net(name: &str) -> Mutation {
        Mutation::PutNetwork(NetworkConfig {
            name: name.into(),
            ageing_s: 300,
            gateway: vec![],
            gateway_mac: None,
            router_advertisements: false,
            vni: None,
        })
    }

    fn apply(store: &Store, state: &mut Desired, m: Mutation) {
        *state = state.with(&m);
        state.generation += 1;
        let seq = store.append(state.generation, &m).unwrap();
        store.sync(seq).unwrap();
    }

    #[test]
    fn journal_replays_onto_the_snapshot_and_torn_tails_are_cut() {
        let dir = tmpdir("replay");
        let mut state = Desired::default();
        {
            let o = Store::open(&dir).unwrap();
            assert!(o.state.is_none());
            o.store.write_snapshot(&state).unwrap();
            apply(&o.store, &mut state, net("a"));
            apply(&o.store, &mut state, net("b"));
            apply(&o.store, &mut state, Mutation::DeleteNetwork("a".into()));
        }
        // A crash in the middle of the next append.
        let mut f = OpenOptions::new().append(true).open(dir.join("journal")).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let o = Store::open(&dir).unwrap();
        assert_eq!(o.replayed, 3);
        assert_eq!(o.truncated, 9);
        assert_eq!(o.state.as_ref(), Some(&state));
        // And the journal goes on cleanly after the cut.
        let mut s2 = o.state.unwrap();
        apply(&o.store, &mut s2, net("c"));
        drop(o.store);
        let o = Store::open(&dir).unwrap();
        assert_eq!(o.state.unwrap().networks.keys().collect::<Vec<_>>(), ["b", "c"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_ends_the_replay_and_compaction_keeps_everything() {
        let dir = tmpdir("corrupt");
        let mut state = Desired::default();
        let o = Store::open(&dir).unwrap();
        apply(&o.store, &mut state, net("a"));
        let good = state.clone();
        apply(&o.store, &mut state, net("b"));
        drop(o);
        // Flip a payload byte of the second record.
        let mut bytes = std::fs::read(dir.join("journal")).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(dir.join("journal"), &bytes).unwrap();
        let o = Store::open(&dir).unwrap();
        assert_eq!(o.state.as_ref(), Some(&good));
        let (store, mut state) = (o.store, o.state.unwrap());
        apply(&store, &mut state, net("c"));
        store.compact(&state).unwrap();
        assert_eq!(std::fs::metadata(dir.join("journal")).unwrap().len(), 0);
        drop(store);
        let o = Store::open(&dir).unwrap();
        assert_eq!(o.state.as_ref(), Some(&state));
        assert_eq!(o.replayed, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_daemons_cannot_share_a_directory() {
        let dir = tmpdir("lock");
        let _first = Store::open(&dir).unwrap();
        let e = Store::open(&dir).unwrap_err().to_string();
        assert!(e.contains("in use by another podswitchd"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
