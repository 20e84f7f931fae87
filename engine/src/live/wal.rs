//! The write-ahead log: every acknowledged write, in order, until a seal makes it part of a
//! published segment.
//!
//! The log is a directory of files `wal-<first seq, 20 digits>.log`, each a header (magic
//! `TNDMWAL1`, version `u32`, reserved `u32`) and records `[payload length u32][xxh3-64 of the
//! payload u64][payload]` (the payload: [`super::record`]). Appends go to the newest file and
//! are made durable by [`Wal::sync`], which fsyncs once for every append made before it (group
//! commit: concurrent writers share one fsync). [`Wal::rotate`] starts a new file, so that
//! once a seal covers every write of the older files, [`Wal::remove_through`] deletes them.
//!
//! Replay reads the files in order and checks every record. A record cut short or failing its
//! checksum at the end of the newest file is a write that never finished (never acknowledged:
//! acknowledgement follows the fsync): the file is truncated there and replay stops. The same
//! anywhere else is corruption, reported with the file and offset.

use crate::error::{Error, Result};
use crate::format::staging::sync_path;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_64;

/// The log's directory inside an index directory.
pub const DIR: &str = "wal";
const MAGIC: &[u8; 8] = b"TNDMWAL1";
const VERSION: u32 = 1;
const HEADER_BYTES: u64 = 16;
const RECORD_HEADER: usize = 12;
/// Largest payload a record may have (a batch of documents at the server's limits is far
/// below it); a longer length field is damage.
pub const MAX_PAYLOAD: usize = 1 << 31;

/// The open log. Lock order: `synced`, then `writer`.
pub struct Wal {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Bytes known durable (a position in the sequence of all bytes ever appended).
    synced: Mutex<u64>,
}

struct Writer {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes appended since the log was opened, over all files: the position sync compares.
    appended: u64,
    /// Bytes in the files now (headers included).
    bytes: u64,
    /// The files, oldest first, with the first sequence number each may hold.
    files: Vec<(u64, PathBuf)>,
}

/// A record read back.
pub struct Replayed {
    /// Its payload.
    pub payload: Vec<u8>,
    /// The file it came from and its offset, for error messages.
    pub place: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn file_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

impl Wal {
    /// Opens the log in `index_dir` (creating it when absent), reads every record (truncating
    /// an unfinished one at the end, see the module doc), and returns the log ready to append
    /// after them, and the records in order.
    pub fn open(index_dir: &Path, next_seq: u64) -> Result<(Wal, Vec<Replayed>)> {
        let dir = index_dir.join(DIR);
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            sync_path(index_dir)?;
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let first = name
                .strip_prefix("wal-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            match first {
                Some(first) => files.push((first, entry.path())),
                // A file being created when the process died.
                None if name.ends_with(".tmp") => {
                    let _ = std::fs::remove_file(entry.path());
                }
                None => {}
            }
        }
        files.sort();
        let mut records = Vec::new();
        let mut bytes = 0;
        let last = files.len().checked_sub(1);
        for (i, (_, path)) in files.iter().enumerate() {
            bytes += read_file(path, Some(i) == last, &mut records)?;
        }
        let (file, path) = match files.last() {
            Some((_, path)) => (open_append(path)?, path.clone()),
            None => {
                let (file, path) = create_file(&dir, next_seq)?;
                bytes += HEADER_BYTES;
                files.push((next_seq, path.clone()));
                (file, path)
            }
        };
        let wal = Wal {
            dir,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                path,
                appended: 0,
                bytes,
                files,
            }),
            synced: Mutex::new(0),
        };
        Ok((wal, records))
    }

    /// Appends one record (not durable until [`Wal::sync`] covers it); returns the position
    /// to sync through.
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        let mut writer = lock(&self.writer);
        let mut record = Vec::with_capacity(RECORD_HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&xxh3_64(payload).to_le_bytes());
        record.extend_from_slice(payload);
        (&*writer.file)
            .write_all(&record)
            .map_err(|e| Error::io(&writer.path, e))?;
        writer.appended += record.len() as u64;
        writer.bytes += record.len() as u64;
        Ok(writer.appended)
    }

    /// Makes every append up to `position` durable: one fsync covers all appends made before
    /// it, so concurrent writers waiting here share it.
    pub fn sync(&self, position: u64) -> Result<()> {
        let mut synced = lock(&self.synced);
        if *synced >= position {
            return Ok(());
        }
        let (file, path, upto) = {
            let writer = lock(&self.writer);
            (writer.file.clone(), writer.path.clone(), writer.appended)
        };
        file.sync_data().map_err(|e| Error::io(&path, e))?;
        *synced = upto;
        Ok(())
    }

    /// Makes every append so far durable.
    pub fn sync_all(&self) -> Result<()> {
        let upto = lock(&self.writer).appended;
        self.sync(upto)
    }

    /// Starts a new file for the writes from `first_seq` on (the current one is fsynced
    /// first), so that the older files can be removed once those writes are sealed.
    pub fn rotate(&self, first_seq: u64) -> Result<()> {
        // `synced` before `writer`, the order `sync` takes them in.
        let mut synced = lock(&self.synced);
        let mut writer = lock(&self.writer);
        writer
            .file
            .sync_data()
            .map_err(|e| Error::io(&writer.path, e))?;
        *synced = writer.appended;
        let (file, path) = create_file(&self.dir, first_seq)?;
        writer.file = Arc::new(file);
        writer.path = path.clone();
        writer.bytes += HEADER_BYTES;
        writer.files.push((first_seq, path));
        Ok(())
    }

    /// Removes the files whose every write has a sequence number up to `seq` (a file holds
    /// the writes from its first sequence number to the next file's, exclusive); the newest
    /// file is never removed.
    pub fn remove_through(&self, seq: u64) -> Result<()> {
        let mut writer = lock(&self.writer);
        let mut removed = false;
        while writer.files.len() > 1 && writer.files[1].0 <= seq + 1 {
            let (_, path) = writer.files.remove(0);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            writer.bytes = writer.bytes.saturating_sub(len);
            removed = true;
        }
        if removed {
            sync_path(&self.dir)?;
        }
        Ok(())
    }

    /// Bytes in the log's files now.
    pub fn bytes(&self) -> u64 {
        lock(&self.writer).bytes
    }
}

/// Creates the log file for writes from `first_seq` on (header written and fsynced through a
/// temporary name, then renamed, directory fsynced), open for appending.
fn create_file(dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(file_name(first_seq));
    let temp = dir.join(format!("{}.tmp", file_name(first_seq)));
    let mut file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    file.write_all(&header())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
    sync_path(dir)?;
    Ok((open_append(&path)?, path))
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

fn header() -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header
}

/// Reads the records of one log file into `records`; returns the file's length after any
/// truncation. `last`: the newest file, whose unfinished tail is truncated.
fn read_file(path: &Path, last: bool, records: &mut Vec<Replayed>) -> Result<u64> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() < HEADER_BYTES as usize || &bytes[..8] != MAGIC {
        if last && bytes.len() < HEADER_BYTES as usize {
            // Created but its header never made it to disk: no write is in it.
            truncate(path, 0)?;
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            file.write_all(&header())
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(path, e))?;
            return Ok(HEADER_BYTES);
        }
        return Err(Error::corrupt(
            path,
            "not a tandem write-ahead log (bad magic)",
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(Error::corrupt(
            path,
            format!("log version {version}, this build reads version {VERSION}"),
        ));
    }
    let mut at = HEADER_BYTES as usize;
    while at < bytes.len() {
        let fault = match bytes.get(at..at + RECORD_HEADER) {
            None => Some("a record header cut short"),
            Some(head) => {
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let mut sum = [0u8; 8];
                sum.copy_from_slice(&head[4..12]);
                let start = at + RECORD_HEADER;
                match bytes.get(start..start.saturating_add(len)) {
                    None => Some("a record cut short"),
                    Some(payload) if xxh3_64(payload) != u64::from_le_bytes(sum) => {
                        Some("a record failing its checksum")
                    }
                    Some(payload) => {
                        records.push(Replayed {
                            payload: payload.to_vec(),
                            place: format!("{} at byte {at}", path.display()),
                        });
                        at = start + len;
                        None
                    }
                }
            }
        };
        if let Some(fault) = fault {
            if !last {
                return Err(Error::corrupt(path, format!("{fault} at byte {at}")));
            }
            tracing_free_note(path, at, fault);
            truncate(path, at as u64)?;
            return Ok(at as u64);
        }
    }
    Ok(bytes.len() as u64)
}

/// Says on stderr that an unfinished write was dropped (the engine has no logger; the
/// server's log shows stderr).
fn tracing_free_note(path: &Path, at: usize, fault: &str) {
    eprintln!(
        "write-ahead log {}: {fault} at byte {at}: an unfinished (never acknowledged) write, \
         dropped",
        path.display()
    );
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(records: &[Replayed]) -> Vec<Vec<u8>> {
        records.iter().map(|r| r.payload.clone()).collect()
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, records) = Wal::open(dir.path(), 1).unwrap();
        assert!(records.is_empty());
        let at = wal.append(b"one").unwrap();
        wal.append(b"two").unwrap();
        wal.sync(at).unwrap();
        wal.sync_all().unwrap();
        wal.rotate(3).unwrap();
        wal.append(b"three").unwrap();
        wal.sync_all().unwrap();
        drop(wal);
        let (wal, records) = Wal::open(dir.path(), 4).unwrap();
        assert_eq!(
            payloads(&records),
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );

        // A torn last record: dropped, and the file truncated so appends follow the good ones.
        let newest = dir.path().join(DIR).join(file_name(3));
        let good = std::fs::metadata(&newest).unwrap().len();
        wal.append(b"four, torn").unwrap();
        wal.sync_all().unwrap();
        drop(wal);
        let torn = std::fs::metadata(&newest).unwrap().len() - 3;
        truncate(&newest, torn).unwrap();
        let (wal, records) = Wal::open(dir.path(), 4).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(std::fs::metadata(&newest).unwrap().len(), good);
        wal.append(b"five").unwrap();
        wal.sync_all().unwrap();

        // Sealing through 2 removes the first file (writes 1 and 2), not the newest.
        wal.remove_through(2).unwrap();
        drop(wal);
        let (_, records) = Wal::open(dir.path(), 5).unwrap();
        assert_eq!(payloads(&records), [b"three".to_vec(), b"five".to_vec()]);
    }

    #[test]
    fn damage_before_the_newest_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1).unwrap();
        wal.append(b"one").unwrap();
        wal.rotate(2).unwrap();
        wal.append(b"two").unwrap();
        wal.sync_all().unwrap();
        drop(wal);
        let first = dir.path().join(DIR).join(file_name(1));
        let mut bytes = std::fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let err = Wal::open(dir.path(), 3).err().unwrap().to_string();
        assert!(err.contains("failing its checksum"), "{err}");
    }
}
