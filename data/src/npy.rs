//! Reading `.npy` arrays (the input format of token vectors, lengths, projections and weight
//! tables).
//!
//! The header is parsed by the `npyz` crate; the data section is read on demand with positioned
//! reads (`pread`), a range of rows at a time, so a multi-gigabyte matrix is never loaded whole.
//! Inputs are **read, never memory-mapped**: they are the user's files, which may change while a
//! build or a client reads them, and a mapped file that changes or shrinks is undefined
//! behaviour (or a `SIGBUS`) where a read only sees other bytes or a short read, reported as an
//! error naming the file. Only C-order, little-endian (or single-byte) arrays of the element
//! types below are accepted.

use crate::error::{Error, Result};
use half::f16;
use npyz::{Endianness, Order, TypeChar};
use std::fs::File;
use std::io::Cursor;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The longest `.npy` header accepted (numpy writes a few hundred bytes).
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Element types tandem reads from `.npy` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDType {
    /// `<f4`
    F32,
    /// `<f2`
    F16,
    /// `|i1`
    I8,
    /// `|u1`
    U8,
    /// `<i4`
    I32,
    /// `<u4`
    U32,
    /// `<i8`
    I64,
    /// `<u8`
    U64,
}

impl NpyDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDType::I8 | NpyDType::U8 => 1,
            NpyDType::F16 => 2,
            NpyDType::F32 | NpyDType::I32 | NpyDType::U32 => 4,
            NpyDType::I64 | NpyDType::U64 => 8,
        }
    }

    /// The numpy name, e.g. `float16`.
    pub fn name(self) -> &'static str {
        match self {
            NpyDType::F32 => "float32",
            NpyDType::F16 => "float16",
            NpyDType::I8 => "int8",
            NpyDType::U8 => "uint8",
            NpyDType::I32 => "int32",
            NpyDType::U32 => "uint32",
            NpyDType::I64 => "int64",
            NpyDType::U64 => "uint64",
        }
    }
}

/// An open `.npy` array: its header, and the file its rows are read from.
pub struct NpyArray {
    path: PathBuf,
    file: File,
    data_offset: u64,
    dtype: NpyDType,
    shape: Vec<usize>,
}

impl NpyArray {
    /// Opens `path` and validates its header against the file size.
    pub fn open(path: &Path) -> Result<NpyArray> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let bad = |message: String| Error::bad_input(path.display().to_string(), message);
        let head = read_header_bytes(&file, path, file_len)?;
        let mut cursor = Cursor::new(&head[..]);
        let header = npyz::NpyFile::new(&mut cursor)
            .map_err(|e| bad(format!("not a readable .npy file: {e}")))?
            .header()
            .clone();
        let data_offset = cursor.position();
        let npyz::DType::Plain(type_str) = header.dtype() else {
            return Err(bad("structured/record dtypes are not supported".into()));
        };
        let little = match type_str.endianness() {
            Endianness::Little | Endianness::Irrelevant => true,
            Endianness::Big => false,
        };
        let dtype = match (type_str.type_char(), type_str.size_field()) {
            (TypeChar::Float, 4) => Some(NpyDType::F32),
            (TypeChar::Float, 2) => Some(NpyDType::F16),
            (TypeChar::Int, 1) => Some(NpyDType::I8),
            (TypeChar::Uint, 1) => Some(NpyDType::U8),
            (TypeChar::Int, 4) => Some(NpyDType::I32),
            (TypeChar::Uint, 4) => Some(NpyDType::U32),
            (TypeChar::Int, 8) => Some(NpyDType::I64),
            (TypeChar::Uint, 8) => Some(NpyDType::U64),
            _ => None,
        };
        let dtype = match dtype {
            Some(d) if little => d,
            _ => {
                return Err(bad(format!(
                    "dtype `{type_str}` is not supported (use little-endian float32, float16, int8, or an integer type for lengths)"
                )))
            }
        };
        if header.order() != Order::C {
            return Err(bad(
                "Fortran-order arrays are not supported; save a C-order array".into(),
            ));
        }
        let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
        let available = file_len.saturating_sub(data_offset);
        if expected.map(|e| e as u64) != Some(available) {
            let needed = expected.map_or("more than 2^64".to_string(), |e| e.to_string());
            return Err(bad(format!(
                "shape {shape:?} of {} needs {needed} data bytes but the file holds {available}",
                dtype.name()
            )));
        }
        Ok(NpyArray {
            path: path.to_path_buf(),
            file,
            data_offset,
            dtype,
            shape,
        })
    }

    /// The file this array was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Element type.
    pub fn dtype(&self) -> NpyDType {
        self.dtype
    }

    /// Shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Rows (outermost index) of the array.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per row (the product of the inner dimensions; 1 for a 1-D array).
    fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Reads the data bytes of rows `rows` into `buf` (replacing its contents). A range past
    /// the end, or a file that shrank since it was opened, is an error naming the file.
    fn read_rows(&self, rows: Range<usize>, buf: &mut Vec<u8>) -> Result<()> {
        let row_bytes = self.row_len() * self.dtype.size();
        if rows.start > rows.end || rows.end > self.rows() {
            return Err(Error::bad_input(
                self.path.display().to_string(),
                format!("rows {rows:?} are outside the array's {} rows", self.rows()),
            ));
        }
        buf.clear();
        buf.resize((rows.end - rows.start) * row_bytes, 0);
        let offset = self.data_offset + (rows.start * row_bytes) as u64;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// A 2-D array's shape as `(rows, cols)`, or an error naming what was expected.
    pub fn matrix_shape(&self) -> Result<(usize, usize)> {
        match self.shape[..] {
            [rows, cols] => Ok((rows, cols)),
            _ => Err(Error::bad_input(
                self.path.display().to_string(),
                format!(
                    "expected a 2-D array [rows, dim], got shape {:?}",
                    self.shape
                ),
            )),
        }
    }

    /// A 1-D integer array as `u64` values; negative values are an error naming their index.
    pub fn to_u64_vec(&self) -> Result<Vec<u64>> {
        let location = || self.path.display().to_string();
        if self.shape.len() != 1 {
            return Err(Error::bad_input(
                location(),
                format!("expected a 1-D array, got shape {:?}", self.shape),
            ));
        }
        let mut bytes = Vec::new();
        self.read_rows(0..self.rows(), &mut bytes)?;
        let data = &bytes[..];
        let signed: Vec<i128> = match self.dtype {
            NpyDType::U8 => data.iter().map(|&b| b as i128).collect(),
            NpyDType::I8 => data.iter().map(|&b| b as i8 as i128).collect(),
            NpyDType::U32 => le_chunks::<4>(data)
                .map(|b| u32::from_le_bytes(b) as i128)
                .collect(),
            NpyDType::I32 => le_chunks::<4>(data)
                .map(|b| i32::from_le_bytes(b) as i128)
                .collect(),
            NpyDType::U64 => le_chunks::<8>(data)
                .map(|b| u64::from_le_bytes(b) as i128)
                .collect(),
            NpyDType::I64 => le_chunks::<8>(data)
                .map(|b| i64::from_le_bytes(b) as i128)
                .collect(),
            NpyDType::F32 | NpyDType::F16 => {
                return Err(Error::bad_input(
                    location(),
                    format!("expected an integer array, got {}", self.dtype.name()),
                ))
            }
        };
        signed
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                u64::try_from(v).map_err(|_| {
                    Error::bad_input(
                        format!("{}: row {i}", location()),
                        format!("negative value {v}"),
                    )
                })
            })
            .collect()
    }

    /// Decodes rows `rows` of a float32/float16 matrix (or int8 multiplied by `int8_scale`) into
    /// `out` as f32, row-major (integer arrays decode to NaN, which callers refuse). Rows past
    /// the end, or a read that fails, are an error naming the file.
    pub fn rows_f32(
        &self,
        rows: Range<usize>,
        int8_scale: Option<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.clear();
        let size = self.dtype.size();
        let mut raw = Vec::new();
        self.read_rows(rows, &mut raw)?;
        let bytes = &raw[..];
        match self.dtype {
            NpyDType::F32 => out.extend(le_chunks::<4>(bytes).map(f32::from_le_bytes)),
            NpyDType::F16 => {
                out.extend(le_chunks::<2>(bytes).map(|b| f16::from_le_bytes(b).to_f32()))
            }
            NpyDType::I8 => {
                let scale = int8_scale.unwrap_or(1.0);
                out.extend(bytes.iter().map(|&b| b as i8 as f32 * scale));
            }
            NpyDType::U8 | NpyDType::I32 | NpyDType::U32 | NpyDType::I64 | NpyDType::U64 => {
                out.extend(std::iter::repeat_n(f32::NAN, bytes.len() / size));
            }
        }
        Ok(())
    }
}

/// Reads the magic, version and header of a `.npy` file (everything before the data), at most
/// [`MAX_HEADER_BYTES`].
fn read_header_bytes(file: &File, path: &Path, file_len: u64) -> Result<Vec<u8>> {
    let bad = |message: String| Error::bad_input(path.display().to_string(), message);
    let mut prefix = [0u8; 12];
    let got = file
        .read_at(&mut prefix, 0)
        .map_err(|e| Error::io(path, e))?;
    if got < 10 || &prefix[..6] != b"\x93NUMPY" {
        return Err(bad("not a readable .npy file: no NUMPY magic".into()));
    }
    let total = match prefix[6] {
        1 => 10 + u64::from(u16::from_le_bytes([prefix[8], prefix[9]])),
        2 | 3 if got == 12 => {
            12 + u64::from(u32::from_le_bytes([
                prefix[8], prefix[9], prefix[10], prefix[11],
            ]))
        }
        v => return Err(bad(format!("not a readable .npy file: version {v}"))),
    };
    if total > MAX_HEADER_BYTES || total > file_len {
        return Err(bad(format!(
            "not a readable .npy file: a header of {total} bytes (file of {file_len})"
        )));
    }
    let mut head = vec![0u8; total as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Error::io(path, e))?;
    Ok(head)
}

/// Prefix sums of per-item row counts (`lens`, read from `lens_path`): item `i`'s rows are
/// `offsets[i]..offsets[i + 1]`. Fails on overflow, naming the file and row.
pub fn row_offsets(lens: &[u64], lens_path: &Path) -> Result<Vec<u64>> {
    let mut offsets = Vec::with_capacity(lens.len() + 1);
    offsets.push(0u64);
    let mut total = 0u64;
    for (i, &len) in lens.iter().enumerate() {
        total = total.checked_add(len).ok_or_else(|| {
            Error::bad_input(
                format!("{}: row {i}", lens_path.display()),
                "token counts overflow 64 bits",
            )
        })?;
        offsets.push(total);
    }
    Ok(offsets)
}

/// Splits little-endian bytes into fixed-size element chunks.
fn le_chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// Writes a C-order `.npy` file of f32 values with the given shape (used by tools and tests).
pub fn write_f32(path: &Path, shape: &[u64], values: &[f32]) -> Result<()> {
    write_plain(path, "<f4", shape, bytemuck::cast_slice(values))
}

/// Writes a C-order `.npy` file of u32 values with the given shape.
pub fn write_u32(path: &Path, shape: &[u64], values: &[u32]) -> Result<()> {
    write_plain(path, "<u4", shape, bytemuck::cast_slice(values))
}

/// Writes a C-order `.npy` file of int8 values with the given shape.
pub fn write_i8(path: &Path, shape: &[u64], values: &[i8]) -> Result<()> {
    write_plain(path, "|i1", shape, bytemuck::cast_slice(values))
}

fn write_plain(path: &Path, descr: &str, shape: &[u64], data: &[u8]) -> Result<()> {
    use std::io::Write;
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(&npy_header(descr, shape))
        .and_then(|()| out.write_all(data))
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(path, e))
}

/// An NPY v1.0 header for a C-order array of `shape` with numpy type `descr`, padded
/// so the data starts at a multiple of 64 bytes.
pub fn npy_header(descr: &str, shape: &[u64]) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            format!("({})", dims.join(", "))
        }
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + header length (2) + dict + '\n'
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    dict.extend(std::iter::repeat_n(' ', pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_arrays_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let values: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        write_f32(&path, &[7, 3], &values).unwrap();
        let array = NpyArray::open(&path).unwrap();
        assert_eq!(array.matrix_shape().unwrap(), (7, 3));
        let mut rows = Vec::new();
        array.rows_f32(2..4, None, &mut rows).unwrap();
        assert_eq!(rows, values[6..12]);
        let err = array.rows_f32(6..8, None, &mut rows).unwrap_err();
        assert!(
            err.to_string().contains("outside the array's 7 rows"),
            "{err}"
        );

        let lens = dir.path().join("l.npy");
        write_u32(&lens, &[3], &[4, 0, 9]).unwrap();
        assert_eq!(
            NpyArray::open(&lens).unwrap().to_u64_vec().unwrap(),
            vec![4, 0, 9]
        );

        let int8 = dir.path().join("i.npy");
        write_i8(&int8, &[1, 2], &[-127, 5]).unwrap();
        NpyArray::open(&int8)
            .unwrap()
            .rows_f32(0..1, Some(0.5), &mut rows)
            .unwrap();
        assert_eq!(rows, vec![-63.5, 2.5]);
    }

    #[test]
    fn truncated_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write_f32(&path, &[4, 4], &[0.0; 16]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = NpyArray::open(&path).err().unwrap().to_string();
        assert!(err.contains("m.npy") && err.contains("data bytes"), "{err}");
    }

    #[test]
    fn a_file_that_shrinks_after_open_is_an_error_not_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write_f32(&path, &[64, 4], &[1.0; 256]).unwrap();
        let array = NpyArray::open(&path).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(200).unwrap();
        let mut rows = Vec::new();
        let err = array
            .rows_f32(0..64, None, &mut rows)
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.npy"), "{err}");
    }

    #[test]
    fn a_missing_file_says_so_once() {
        let err = NpyArray::open(Path::new("/nonexistent/x.npy"))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "/nonexistent/x.npy: does not exist");
    }
}
