//! Array files: a 64-byte header followed by a little-endian array, memory-mapped on read.

use crate::error::{Error, Result};
use crate::format::FORMAT_VERSION;
use half::f16;
use memmap2::Mmap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use xxhash_rust::xxh3::Xxh3;

/// Magic bytes at the start of every array file.
pub const MAGIC: [u8; 8] = *b"TNDMARR\0";
/// Bytes before the first element; a multiple of every element's alignment.
pub const HEADER_LEN: usize = 64;
const NAME_LEN: usize = 16;

/// The element type of an array file, as stored in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// `u8`
    U8 = 1,
    /// `u32`
    U32 = 2,
    /// `u64`
    U64 = 3,
    /// `f32`
    F32 = 4,
    /// IEEE half precision.
    F16 = 5,
    /// `u16`
    U16 = 6,
    /// `i8`
    I8 = 7,
}

/// A type that can be stored in an array file.
pub trait Element: bytemuck::Pod {
    /// Its tag in the header.
    const DTYPE: DType;
}

impl Element for u8 {
    const DTYPE: DType = DType::U8;
}
impl Element for i8 {
    const DTYPE: DType = DType::I8;
}
impl Element for u16 {
    const DTYPE: DType = DType::U16;
}
impl Element for u32 {
    const DTYPE: DType = DType::U32;
}
impl Element for u64 {
    const DTYPE: DType = DType::U64;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
}

fn encode_header(name: &str, dtype: DType, len: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(dtype as u32).to_le_bytes());
    let name = name.as_bytes();
    let n = name.len().min(NAME_LEN);
    header[16..16 + n].copy_from_slice(&name[..n]);
    header[32..40].copy_from_slice(&len.to_le_bytes());
    header
}

/// Streams the elements of one array file to disk, hashing every byte written.
///
/// The length is declared up front (it goes into the header); [`ArrayWriter::finish`] fails if a
/// different number of elements was pushed.
pub struct ArrayWriter<T: Element> {
    path: PathBuf,
    out: BufWriter<File>,
    hasher: Xxh3,
    declared: u64,
    written: u64,
    bytes: u64,
    _element: PhantomData<T>,
}

/// Size and checksum of a finished file, as recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenFile {
    /// File size in bytes.
    pub bytes: u64,
    /// xxh3-64 of the whole file.
    pub xxh3: u64,
}

impl<T: Element> ArrayWriter<T> {
    /// Creates `path` for an array called `name` of `len` elements.
    pub fn create(path: &Path, name: &str, len: u64) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut writer = ArrayWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Xxh3::new(),
            declared: len,
            written: 0,
            bytes: 0,
            _element: PhantomData,
        };
        writer.write_bytes(&encode_header(name, T::DTYPE, len))?;
        Ok(writer)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Appends elements.
    pub fn push_slice(&mut self, values: &[T]) -> Result<()> {
        self.written += values.len() as u64;
        self.write_bytes(bytemuck::cast_slice(values))
    }

    /// Flushes and fsyncs the file; checks the declared length was written.
    pub fn finish(self) -> Result<WrittenFile> {
        if self.written != self.declared {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "writer declared {} elements but {} were written",
                    self.declared, self.written
                ),
            ));
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok(WrittenFile {
            bytes: self.bytes,
            xxh3: self.hasher.digest(),
        })
    }
}

/// Writes a whole array file in one call.
pub fn write_array<T: Element>(path: &Path, name: &str, values: &[T]) -> Result<WrittenFile> {
    let mut writer = ArrayWriter::create(path, name, values.len() as u64)?;
    writer.push_slice(values)?;
    writer.finish()
}

/// A memory-mapped array file, validated on open (header, element type, name, length).
pub struct ArrayFile<T: Element> {
    map: Mmap,
    file: File,
    len: usize,
    _element: PhantomData<T>,
}

impl<T: Element> ArrayFile<T> {
    /// Maps `path` and checks that it holds an array called `name` of element type `T`.
    pub fn open(path: &Path, name: &str) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let map = crate::mmap::map_file(&file, path)?;
        if map.len() < HEADER_LEN {
            return Err(Error::corrupt(path, "file is shorter than its header"));
        }
        if map[0..8] != MAGIC {
            return Err(Error::corrupt(path, "not a tandem array file (bad magic)"));
        }
        let version = u32::from_le_bytes([map[8], map[9], map[10], map[11]]);
        if version != FORMAT_VERSION {
            return Err(Error::corrupt(
                path,
                format!("format version {version}, this build reads version {FORMAT_VERSION}"),
            ));
        }
        let dtype = u32::from_le_bytes([map[12], map[13], map[14], map[15]]);
        if dtype != T::DTYPE as u32 {
            return Err(Error::corrupt(
                path,
                format!("element type tag {dtype}, expected {:?}", T::DTYPE),
            ));
        }
        let expected_name = encode_header(name, T::DTYPE, 0);
        if map[16..32] != expected_name[16..32] {
            return Err(Error::corrupt(
                path,
                format!("holds another array than `{name}`"),
            ));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&map[32..40]);
        let len = u64::from_le_bytes(len_bytes);
        let data_bytes = (map.len() - HEADER_LEN) as u64;
        if len.checked_mul(std::mem::size_of::<T>() as u64) != Some(data_bytes) {
            return Err(Error::corrupt(
                path,
                format!("header says {len} elements but the file holds {data_bytes} data bytes"),
            ));
        }
        // The mapping is page-aligned and HEADER_LEN is a multiple of every element's alignment,
        // so the cast below cannot fail; checking here keeps `as_slice` infallible.
        bytemuck::try_cast_slice::<u8, T>(&map[HEADER_LEN..])
            .map_err(|e| Error::corrupt(path, format!("misaligned data: {e}")))?;
        Ok(ArrayFile {
            map,
            file,
            len: len as usize,
            _element: PhantomData,
        })
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        bytemuck::cast_slice(&self.map[HEADER_LEN..])
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Asks the kernel to read elements `range` ahead (see [`crate::mmap::will_need`]).
    pub fn will_need(&self, range: std::ops::Range<usize>) {
        let size = std::mem::size_of::<T>();
        crate::mmap::will_need(
            &self.map,
            HEADER_LEN + range.start * size,
            range.len() * size,
        );
    }

    /// Bytes of the file in memory now (see [`crate::mmap::resident_bytes`]).
    pub fn resident_bytes(&self) -> usize {
        crate::mmap::resident_bytes(&self.map)
    }

    /// Whether every page of the file is in memory now (see [`crate::mmap::resident_bytes`]).
    pub fn is_resident(&self) -> bool {
        crate::mmap::resident_bytes(&self.map) >= self.map.len()
    }

    /// Evicts the file from memory (see [`crate::mmap::evict`]); for cold benchmarks.
    pub fn evict(&self) {
        crate::mmap::evict(&self.map, &self.file);
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Computes the xxh3-64 checksum of a whole file, reading it through a memory map in 16 MiB
/// chunks; [`Error::Cancelled`] as soon as `stop` is set (checked before each chunk).
pub fn checksum_file(path: &Path, stop: &AtomicBool) -> Result<WrittenFile> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if bytes == 0 {
        return Ok(WrittenFile {
            bytes,
            xxh3: xxhash_rust::xxh3::xxh3_64(&[]),
        });
    }
    let map = crate::mmap::map_file(&file, path)?;
    let mut hasher = Xxh3::new();
    for chunk in map.chunks(1 << 24) {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        hasher.update(chunk);
    }
    Ok(WrittenFile {
        bytes,
        xxh3: hasher.digest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let values: Vec<u32> = (0..1000).collect();
        let written = write_array(&path, "numbers", &values).unwrap();
        let go_on = AtomicBool::new(false);
        assert_eq!(written, checksum_file(&path, &go_on).unwrap());
        let stop = AtomicBool::new(true);
        assert!(matches!(checksum_file(&path, &stop), Err(Error::Cancelled)));
        assert_eq!(written.bytes, HEADER_LEN as u64 + 4000);
        let file = ArrayFile::<u32>::open(&path, "numbers").unwrap();
        assert_eq!(file.as_slice(), &values[..]);
    }

    #[test]
    fn open_refuses_wrong_type_name_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        write_array(&path, "numbers", &[1u32, 2, 3]).unwrap();
        let err = ArrayFile::<f32>::open(&path, "numbers").err().unwrap();
        assert!(err.to_string().contains("element type"), "{err}");
        let err = ArrayFile::<u32>::open(&path, "other").err().unwrap();
        assert!(err.to_string().contains("another array"), "{err}");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = ArrayFile::<u32>::open(&path, "numbers").err().unwrap();
        assert!(err.to_string().contains("header says 3 elements"), "{err}");
    }

    #[test]
    fn writer_checks_declared_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ArrayWriter::<u64>::create(&dir.path().join("a"), "x", 3).unwrap();
        writer.push_slice(&[1, 2]).unwrap();
        assert!(writer.finish().is_err());
    }
}
