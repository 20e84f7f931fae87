//! Read-only memory maps of index files: the one place the engine creates a mapping, advises the
//! kernel about one, or asks the CPU to prefetch cache lines.

use crate::error::{Error, Result};
use memmap2::{Advice, Mmap, MmapOptions, UncheckedAdvice};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Maps `file` (opened from `path`) read-only.
pub fn map_file(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: memmap2 requires that the file is not modified or truncated while mapped, or reads
    // through the mapping may see changed bytes or fault. Segment directories are immutable once
    // committed: builds write a new staging directory and rename it into place, and nothing in
    // tandem writes to a committed index file. A user who edits index files under a running
    // server breaks that contract (documented in ARCHITECTURE.md).
    unsafe { MmapOptions::new().map(file) }.map_err(|e| Error::io(path, e))
}

/// Asks the kernel to read `len` bytes at `offset` of the mapping ahead (`MADV_WILLNEED`), so a
/// cold page is on its way before it is touched. Advisory: errors are ignored.
pub fn will_need(map: &Mmap, offset: usize, len: usize) {
    let page = page_size();
    let start = offset / page * page;
    let end = (offset + len).min(map.len());
    if start < end {
        let _ = map.advise_range(Advice::WillNeed, start, end - start);
    }
}

/// Drops the mapping's pages from this process and the file's clean pages from the page cache,
/// so the next reads come from the disk (benchmarks of cold queries). Advisory: errors ignored.
pub fn evict(map: &Mmap, file: &File) {
    // SAFETY: `MADV_DONTNEED` on a read-only, shared, file-backed mapping only discards this
    // process's page table entries; the next access faults the same file contents back in, so
    // no reader can observe different data (the index files are immutable, see `map_file`).
    let _ = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) };
    // SAFETY: plain system call on an open file descriptor; it only drops clean cached pages.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Bytes of the mapping that are in memory now (`mincore`), in whole pages; 0 if the kernel
/// cannot tell.
pub fn resident_bytes(map: &Mmap) -> usize {
    let page = page_size();
    let pages = map.len().div_ceil(page);
    if pages == 0 {
        return 0;
    }
    let mut flags = vec![0u8; pages];
    // SAFETY: `mincore` reads the page table for `[addr, addr + len)`, which is exactly this
    // live mapping (page-aligned: mmap returns page-aligned addresses), and writes one byte per
    // page into `flags`, which holds `ceil(len / page)` bytes.
    let status = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            flags.as_mut_ptr().cast(),
        )
    };
    if status != 0 {
        return 0;
    }
    let resident = flags.iter().filter(|&&f| f & 1 == 1).count();
    (resident * page).min(map.len())
}

fn page_size() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// Asks the CPU to bring every cache line of `data` into its caches ahead of use, so that
/// reads of several scattered rows (forward-index rows of the candidates to rescore) overlap
/// instead of each waiting for memory in turn. A hint: it changes no result, and it is a no-op on
/// targets other than x86-64 and aarch64.
#[inline]
pub fn prefetch_lines<T>(data: &[T]) {
    const LINE: usize = 64;
    let bytes = std::mem::size_of_val(data);
    if bytes == 0 {
        return;
    }
    let start = data.as_ptr().cast::<u8>();
    let first = start.wrapping_sub(start as usize % LINE);
    let end = start.wrapping_add(bytes);
    let mut line = first;
    while line < end {
        prefetch_line(line);
        line = line.wrapping_add(LINE);
    }
}

#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint: it never faults, whatever the address (an unmapped or
    // invalid one is ignored), and writes nothing; SSE, which it needs, is part of the x86-64
    // baseline every build targets.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` is a hint: it never faults, whatever the address, reads nothing the program
    // sees, writes nothing, and touches neither the stack nor the flags.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}
