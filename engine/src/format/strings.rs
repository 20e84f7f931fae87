//! String tables (vocabulary terms, external document ids): UTF-8 bytes plus `u64` offsets.

use crate::error::{Error, Result};
use crate::format::array::{write_array, ArrayFile, WrittenFile};
use std::path::Path;

/// An immutable table of strings, loaded into memory and validated on open.
#[derive(Debug, Clone, Default)]
pub struct StringTable {
    text: String,
    offsets: Vec<u64>,
}

impl StringTable {
    /// Builds a table from strings, in order.
    pub fn from_strings<S: AsRef<str>>(strings: &[S]) -> StringTable {
        let mut text = String::new();
        let mut offsets = Vec::with_capacity(strings.len() + 1);
        offsets.push(0);
        for s in strings {
            text.push_str(s.as_ref());
            offsets.push(text.len() as u64);
        }
        StringTable { text, offsets }
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the table holds no strings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// String `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&str> {
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i + 1)? as usize;
        self.text.get(start..end)
    }

    /// The strings in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Writes the offsets and bytes files.
    pub fn write(
        &self,
        offsets_path: &Path,
        bytes_path: &Path,
        name: &str,
    ) -> Result<(WrittenFile, WrittenFile)> {
        let offsets = write_array(offsets_path, &format!("{name}.offsets"), &self.offsets)?;
        let bytes = write_array(bytes_path, &format!("{name}.bytes"), self.text.as_bytes())?;
        Ok((offsets, bytes))
    }

    /// Reads a table written by [`StringTable::write`], checking it holds `expected_len` valid
    /// UTF-8 strings.
    pub fn open(
        offsets_path: &Path,
        bytes_path: &Path,
        name: &str,
        expected_len: usize,
    ) -> Result<StringTable> {
        let offsets = ArrayFile::<u64>::open(offsets_path, &format!("{name}.offsets"))?;
        let bytes = ArrayFile::<u8>::open(bytes_path, &format!("{name}.bytes"))?;
        let text = String::from_utf8(bytes.as_slice().to_vec())
            .map_err(|e| Error::corrupt(bytes_path, format!("not UTF-8: {e}")))?;
        let offsets = offsets.as_slice().to_vec();
        if offsets.len() != expected_len + 1 {
            return Err(Error::corrupt(
                offsets_path,
                format!("{} offsets for {expected_len} strings", offsets.len()),
            ));
        }
        let ok = offsets.first() == Some(&0)
            && offsets.last() == Some(&(text.len() as u64))
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.iter().all(|&o| text.is_char_boundary(o as usize));
        if !ok {
            return Err(Error::corrupt(
                offsets_path,
                "offsets are not ascending character boundaries of the string bytes",
            ));
        }
        Ok(StringTable { text, offsets })
    }
}
