//! Lowering the CPU priority of the calling thread, for background work (refreshes, seals and
//! merges of live writes) that must leave the cores to queries when both want them.

/// Nice value background threads run at (0 is the default, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Gives the calling thread the nice value [`BACKGROUND_NICE`] (on Linux, where each thread has
/// its own; elsewhere nothing). Best effort: a refusal leaves the priority as it was.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `setpriority(PRIO_PROCESS, 0, n)` takes no pointers; with `who = 0` it applies
        // to the calling thread alone on Linux (threads have their own nice values), and it can
        // only fail (EACCES, EPERM), which leaves everything as it was.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
    }
}
